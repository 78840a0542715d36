// A real OpenID Provider for `bastion demo` and the bastion's tests: oidc-provider with the device authorization
// grant (RFC 8628), userinfo, fixed clients and accounts from a JSON file, and a minimal login/consent app of plain
// HTML forms.
//
//   node provider.mjs CONFIG.json [PORT]     (PORT may also come from $OIDC_PORT; 0 or none: any free port)
//
// Listens on 127.0.0.1 only; the issuer is http://127.0.0.1:PORT. Prints "READY <issuer>" on stdout once it
// accepts connections, exits 0 on SIGTERM/SIGINT. Everything is in memory: a restart forgets sessions and codes.
// See tests/support/oidc.py for the config file's shape and bastion/demo/idp.py for the demo's side.

import { generateKeyPairSync, randomBytes, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider, { errors } from 'oidc-provider';

const HOST = '127.0.0.1';
const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
const ID_TOKEN_ALGS = new Set(['RS256', 'PS256', 'ES256', 'Ed25519', 'EdDSA']); // oidc-provider's defaults
const POLL_SLACK_MS = 50; // a poll this much early still counts as on time (timer jitter)

function fail(message) {
  console.error(`provider.mjs: ${message}`);
  process.exit(2);
}

// ---------------------------------------------------------------------------------------------------- config

const [configPath, portArg] = process.argv.slice(2);
if (!configPath) fail('usage: node provider.mjs CONFIG.json [PORT]');
let config;
try {
  config = JSON.parse(readFileSync(configPath, 'utf8'));
} catch (err) {
  fail(`cannot read ${configPath}: ${err.message}`);
}
const port = Number(portArg ?? process.env.OIDC_PORT ?? 0);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail(`bad port ${portArg ?? process.env.OIDC_PORT}`);

const number = (key, fallback, min) => {
  const value = config[key] ?? fallback;
  if (typeof value !== 'number' || !(value >= min)) fail(`${key} must be a number >= ${min}`);
  return value;
};
const deviceCodeTtl = number('device_code_ttl', 600, 1);
const interval = number('interval', 1, 1); // advertised in the device authorization response
const minPollInterval = number('min_poll_interval', interval, 0); // what the token endpoint enforces at first
const slowDownIncrement = number('slow_down_increment', 5, 0); // RFC 8628 3.5: +5 s after each slow_down
const groupsInIdToken = config.groups_in_id_token ?? true;
if (!Number.isInteger(deviceCodeTtl)) fail('device_code_ttl must be whole seconds');

function signingAlg(jwk) {
  if (jwk.alg) return jwk.alg;
  if (jwk.kty === 'RSA') return 'RS256';
  if (jwk.kty === 'EC' && jwk.crv === 'P-256') return 'ES256';
  if (jwk.kty === 'OKP' && jwk.crv === 'Ed25519') return 'EdDSA';
  return fail(`key ${jwk.kid}: no alg and no default for kty ${jwk.kty} crv ${jwk.crv}`);
}

let jwks = config.jwks;
if (jwks === undefined || jwks === null) {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  jwks = { keys: [{ ...privateKey.export({ format: 'jwk' }), kid: 'default', alg: 'RS256', use: 'sig' }] };
}
if (!Array.isArray(jwks.keys) || jwks.keys.length === 0) fail('jwks must be {"keys": [...]} with at least one key');
for (const key of jwks.keys) {
  if (!key.kid || !key.d) fail('every jwks key needs a kid and its private part');
  if (!ID_TOKEN_ALGS.has(signingAlg(key))) fail(`key ${key.kid}: alg ${signingAlg(key)} is not enabled`);
}
const defaultIdTokenAlg = signingAlg(jwks.keys[0]); // the first key signs (oidc-provider picks the first match)

if (!Array.isArray(config.clients) || config.clients.length === 0) fail('clients must be a non-empty list');
const clients = config.clients.map((c) => {
  if (typeof c.client_id !== 'string' || !c.client_id) fail('every client needs a client_id');
  const client = {
    client_id: c.client_id,
    grant_types: [DEVICE_GRANT, ...(c.refresh_token === false ? [] : ['refresh_token'])],
    response_types: [],
    redirect_uris: [],
    id_token_signed_response_alg: c.id_token_signed_response_alg ?? defaultIdTokenAlg,
  };
  if (c.client_secret) {
    client.client_secret = c.client_secret;
    client.token_endpoint_auth_method = c.token_endpoint_auth_method ?? 'client_secret_basic';
  } else {
    client.token_endpoint_auth_method = 'none';
  }
  if (c.client_name) client.client_name = c.client_name;
  return client;
});

if (!config.accounts || typeof config.accounts !== 'object') fail('accounts must be {login: {password, sub, ...}}');
const accountsByLogin = new Map();
const accountsBySub = new Map();
for (const [login, a] of Object.entries(config.accounts)) {
  if (typeof a.password !== 'string') fail(`account ${login}: password must be a string`);
  const account = {
    login, password: a.password, sub: String(a.sub ?? login), email: a.email, groups: a.groups ?? [],
    preferred_username: a.preferred_username,
  };
  if (!Array.isArray(account.groups)) fail(`account ${login}: groups must be a list`);
  if (accountsBySub.has(account.sub)) fail(`account ${login}: sub ${account.sub} is not unique`);
  accountsByLogin.set(login, account);
  accountsBySub.set(account.sub, account);
}

function checkPassword(login, password) {
  const account = accountsByLogin.get(login);
  if (!account || typeof password !== 'string') return undefined;
  const want = Buffer.from(account.password);
  const got = Buffer.from(password);
  return want.length === got.length && timingSafeEqual(want, got) ? account : undefined;
}

async function findAccount(ctx, sub) {
  const account = accountsBySub.get(sub);
  if (!account) return undefined;
  return {
    accountId: account.sub,
    async claims() { // oidc-provider keeps only what the granted scopes/claims allow
      const claims = { sub: account.sub, groups: account.groups };
      if (account.email !== undefined) Object.assign(claims, { email: account.email, email_verified: true });
      if (account.preferred_username !== undefined) claims.preferred_username = account.preferred_username;
      return claims;
    },
  };
}

// ---------------------------------------------------------------------------------------------------- pages

const esc = (value) => String(value).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function page(title, body) {
  return `<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>${esc(title)}</title></head>
<body>
<h1>${esc(title)}</h1>
${body}
</body>
</html>
`;
}

const DEVICE_ERRORS = {
  NoCodeError: 'Enter the code displayed on your device.',
  NotFoundError: 'The code you entered is not known. Try again.',
  ExpiredError: 'The code you entered has expired.',
  AlreadyUsedError: 'The code you entered has already been used.',
  AbortedError: 'The sign-in request was denied.',
};

const deviceFlow = {
  enabled: true,
  // GET /device: the user code form (form id "op.deviceInputForm": hidden xsrf, text user_code)
  async userCodeInputSource(ctx, form, out, err) {
    const message = err
      ? `<p id="message" class="error" data-error="${esc(err.name)}">${
        esc(DEVICE_ERRORS[err.name] ?? `There was an error processing your request (${out?.error ?? err.name}).`)}</p>`
      : '<p id="message">Enter the code displayed on your device.</p>';
    ctx.type = 'html';
    ctx.body = page('Device sign-in', `${message}
${form}
<button type="submit" form="op.deviceInputForm">Continue</button>`);
  },
  // POST /device without confirm: "is this your device?" (form id "op.deviceConfirmForm": xsrf, user_code, confirm)
  async userCodeConfirmSource(ctx, form, client, deviceInfo, userCode) {
    ctx.type = 'html';
    ctx.body = page('Confirm device', `<p id="client">${esc(client.clientName ?? client.clientId)}</p>
<p>The following code should be displayed on your device: <code id="user-code">${esc(userCode)}</code></p>
${form}
<button type="submit" form="op.deviceConfirmForm">Continue</button>
<button type="submit" form="op.deviceConfirmForm" name="abort" value="yes">Abort</button>`);
  },
  async successSource(ctx) {
    ctx.type = 'html';
    ctx.body = page('Sign-in complete', `<p id="success">You are signed in to ${
      esc(ctx.oidc.client.clientName ?? ctx.oidc.client.clientId)}; you can close this page.</p>`);
  },
};

async function renderError(ctx, out) {
  ctx.type = 'html';
  ctx.body = page('Error', Object.entries(out)
    .map(([key, value]) => `<p class="error" id="${esc(key)}">${esc(key)}: ${esc(value)}</p>`).join('\n'));
}

function loginPage(uid, client, error) {
  return page('Sign in', `<p id="client">${esc(client)} asks you to sign in.</p>
${error ? `<p id="message" class="error">${esc(error)}</p>` : ''}
<form id="login-form" method="post" action="/interaction/${esc(uid)}/login">
<input type="text" name="login" autofocus>
<input type="password" name="password">
<button type="submit">Sign in</button>
</form>
<form id="abort-form" method="post" action="/interaction/${esc(uid)}/abort">
<button type="submit" name="abort" value="yes">Cancel</button>
</form>`);
}

function consentPage(uid, client, details) {
  const scopes = details.missingOIDCScope ?? [];
  const claims = details.missingOIDCClaims ?? [];
  return page('Authorize', `<p id="client">${esc(client)} asks for:</p>
<ul id="scopes">${scopes.map((s) => `<li>${esc(s)}</li>`).join('')}</ul>
${claims.length ? `<ul id="claims">${claims.map((c) => `<li>${esc(c)}</li>`).join('')}</ul>` : ''}
<form id="consent-form" method="post" action="/interaction/${esc(uid)}/consent">
<button type="submit" name="approve" value="yes">Allow</button>
</form>
<form id="deny-form" method="post" action="/interaction/${esc(uid)}/deny">
<button type="submit" name="deny" value="yes">Deny</button>
</form>`);
}

// ---------------------------------------------------------------------------------------------------- provider

const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, HOST, resolve);
});
const issuer = `http://${HOST}:${server.address().port}`;

let provider;
try {
  provider = new Provider(issuer, {
    clients,
    findAccount,
    jwks,
    claims: { openid: ['sub'], profile: ['preferred_username'], email: ['email', 'email_verified'], groups: ['groups'] },
    // false: claims of the granted scopes (email, groups) also go into the ID token, not only to userinfo
    conformIdTokenClaims: !groupsInIdToken,
    features: {
      deviceFlow,
      userinfo: { enabled: true },
      devInteractions: { enabled: false },
    },
    ttl: {
      DeviceCode: deviceCodeTtl,
      AccessToken: 3600,
      IdToken: 3600,
      RefreshToken: 86400,
      Interaction: 3600,
      Session: 86400,
      Grant: 86400,
    },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    interactions: { url: (ctx, interaction) => `/interaction/${interaction.uid}` },
    renderError,
  });
} catch (err) {
  server.close();
  fail(`oidc-provider refused the configuration: ${err.message}`);
}

// access log on stderr (never tokens or codes): method, path, status and, for OAuth errors, the error code
provider.use(async (ctx, next) => {
  await next();
  const error = ctx.body && typeof ctx.body === 'object' && ctx.body.error ? ` ${ctx.body.error}` : '';
  console.error(`${ctx.method} ${ctx.path} ${ctx.status}${error}`);
});

// RFC 8628 polling interval, which oidc-provider leaves to the deployment: it neither advertises an interval
// nor ever answers slow_down. We add "interval" to the device authorization response and turn a pending
// answer into slow_down when a device code is polled again sooner than its current interval. The interval
// grows by slow_down_increment after every slow_down (as RFC 8628 3.5 tells the client to), and is never below
// min_poll_interval. The first poll of a code is never too early.
const polls = new Map(); // device_code -> {last: ms of the previous poll, slowDowns: count, expires: ms}
provider.use(async (ctx, next) => {
  const arrived = Date.now();
  await next();
  const route = ctx.oidc?.route;
  if (route === 'device_authorization' && ctx.status === 200 && ctx.body?.device_code) {
    ctx.body.interval = interval;
    polls.set(ctx.body.device_code, { last: undefined, slowDowns: 0, expires: arrived + deviceCodeTtl * 1000 });
    for (const [code, p] of polls) if (p.expires + 60_000 < arrived) polls.delete(code);
    return;
  }
  if (route !== 'token' || ctx.oidc.params?.grant_type !== DEVICE_GRANT) return;
  const p = polls.get(ctx.oidc.params.device_code);
  if (!p) return;
  const previous = p.last;
  p.last = arrived;
  if (ctx.body?.error !== 'authorization_pending' || previous === undefined) return;
  const required = Math.max(minPollInterval, interval + p.slowDowns * slowDownIncrement) * 1000;
  if (arrived - previous + POLL_SLACK_MS < required) {
    p.slowDowns += 1;
    ctx.status = 400;
    const slowDown = new errors.SlowDown();
    ctx.body = { error: slowDown.error, error_description: slowDown.error_description };
  }
});

// The login and consent app (instead of oidc-provider's devInteractions).
async function readForm(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > 64 * 1024) throw new errors.InvalidRequest('form too large');
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
}

const INTERACTION = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|consent|deny|abort))?$/;

provider.use(async (ctx, next) => {
  const match = INTERACTION.exec(ctx.path);
  if (!match) return next();
  const [, uid, action] = match;
  ctx.set('cache-control', 'no-store');
  try {
    const details = await provider.interactionDetails(ctx.req, ctx.res);
    if (details.uid !== uid) throw new errors.SessionNotFound('interaction mismatch');
    const { prompt, params } = details;
    const client = (await provider.Client.find(params.client_id))?.clientName ?? params.client_id;

    if (ctx.method === 'GET' && !action) {
      ctx.type = 'html';
      if (prompt.name === 'login') ctx.body = loginPage(uid, client);
      else if (prompt.name === 'consent') ctx.body = consentPage(uid, client, prompt.details);
      else throw new errors.InvalidRequest(`unexpected prompt ${prompt.name}`);
      return undefined;
    }
    if (ctx.method !== 'POST' || !action) return next();
    const form = await readForm(ctx.req);

    if (action === 'login') {
      if (prompt.name !== 'login') throw new errors.InvalidRequest('not at the login step');
      const account = checkPassword(form.get('login'), form.get('password'));
      if (!account) {
        ctx.status = 401;
        ctx.type = 'html';
        ctx.body = loginPage(uid, client, 'Invalid login or password.');
        return undefined;
      }
      return provider.interactionFinished(ctx.req, ctx.res, {
        login: { accountId: account.sub, amr: ['pwd'] },
      }, { mergeWithLastSubmission: false });
    }

    if (action === 'consent') {
      if (prompt.name !== 'consent') throw new errors.InvalidRequest('not at the consent step');
      const grant = details.grantId
        ? await provider.Grant.find(details.grantId)
        : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
      const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = prompt.details;
      if (missingOIDCScope) grant.addOIDCScope(missingOIDCScope.join(' '));
      if (missingOIDCClaims) grant.addOIDCClaims(missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(missingResourceScopes ?? {})) {
        grant.addResourceScope(indicator, scopes.join(' '));
      }
      const grantId = await grant.save();
      return provider.interactionFinished(ctx.req, ctx.res, {
        consent: details.grantId ? {} : { grantId },
      }, { mergeWithLastSubmission: true });
    }

    // deny (at consent) or abort (at login): the device code then answers access_denied
    return provider.interactionFinished(ctx.req, ctx.res, {
      error: 'access_denied',
      error_description: action === 'deny' ? 'End-User denied the request' : 'End-User aborted the sign-in',
    }, { mergeWithLastSubmission: false });
  } catch (err) {
    if (!(err instanceof errors.OIDCProviderError)) throw err;
    ctx.status = err.statusCode ?? 400;
    await renderError(ctx, { error: err.message, error_description: err.error_description });
    return undefined;
  }
});

server.on('request', provider.callback());

function shutdown() {
  server.close(() => process.exit(0));
  server.closeAllConnections();
  setTimeout(() => process.exit(0), 2000).unref();
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);
if (config.exit_with_stdin) { // the demo holds our stdin open: its end (the demo gone, even by kill -9) stops us too
  process.stdin.on('end', shutdown);
  process.stdin.on('error', shutdown);
  process.stdin.resume();
}

console.log(`READY ${issuer}`);
