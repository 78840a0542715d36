"""One attempt to hand one notification to one target: an HTTP POST (webhook, Slack) or an SMTP dialogue.

Secrets are read from their files at each attempt (a rotated secret applies without a restart) and never appear in
an error: what an attempt raises is :class:`DeliveryError`, whose text is one line fit for the log and for
``bastion notify status`` (an HTTP status, a refused connection), scrubbed of the URL, which may be a secret.
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import time
from typing import Any

import httpx

from bastion.config import Config
from bastion.config.notify import EmailTarget, SlackTarget, UrlTarget, WebhookTarget
from bastion.notify.formats import email_message, slack_message, webhook_request


class DeliveryError(Exception):
    """An attempt failed; ``str()`` is one line saying why, with no secret in it."""


def _one_line(e: BaseException, *secrets: str) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    for s in secrets:
        if s:
            text = text.replace(s, "<secret>")
    return f"{type(e).__name__}: {text}"[:500]


def _url(cfg: Config, t: UrlTarget) -> str:
    if t.url is not None:
        return t.url
    assert t.url_file is not None
    return cfg.resolve(t.url_file).read_text().strip()


async def _post(url: str, content: bytes, headers: dict[str, str], timeout: float) -> None:
    try:
        async with httpx.AsyncClient(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            r = await client.post(url, content=content, headers=headers)
    except (httpx.HTTPError, OSError) as e:
        raise DeliveryError(_one_line(e, url)) from None
    if not 200 <= r.status_code < 300:  # a redirect is a failure too: the body is never re-sent elsewhere
        raise DeliveryError(f"HTTP {r.status_code} {r.reason_phrase}".strip())


async def send_webhook(cfg: Config, t: WebhookTarget, body: dict[str, Any], timeout: float) -> None:
    try:
        secret = cfg.resolve(t.secret_file).read_bytes().strip()
        url = _url(cfg, t)
    except OSError as e:
        raise DeliveryError(f"cannot read a file of the target: {e.strerror or e}") from None
    content, headers = webhook_request(body, secret, int(time.time()))
    await _post(url, content, headers, timeout)


async def send_slack(cfg: Config, t: SlackTarget, body: dict[str, Any], timeout: float) -> None:
    import json

    try:
        url = _url(cfg, t)
    except OSError as e:
        raise DeliveryError(f"cannot read url_file: {e.strerror or e}") from None
    content = json.dumps(slack_message(body), ensure_ascii=False).encode()
    await _post(url, content, {"Content-Type": "application/json", "User-Agent": "bastion-notify/1"}, timeout)


def _smtp(cfg: Config, t: EmailTarget, body: dict[str, Any], timeout: float) -> None:
    """The SMTP dialogue (blocking: run in a thread). STARTTLS, when asked for, is required, not tried."""
    smtp = t.smtp
    password = cfg.resolve(smtp.password_file).read_text().strip() if smtp.password_file else ""
    msg = email_message(body, t.sender, list(t.to))
    try:
        with smtplib.SMTP(smtp.host, smtp.port, timeout=timeout) as conn:
            conn.ehlo()
            if smtp.starttls:
                if not conn.has_extn("starttls"):
                    raise DeliveryError(f"{smtp.host}:{smtp.port} offers no STARTTLS (starttls: true)")
                ctx = ssl.create_default_context(cafile=str(cfg.resolve(smtp.ca_file)) if smtp.ca_file else None)
                conn.starttls(context=ctx)
                conn.ehlo()
            if smtp.username is not None:
                conn.login(smtp.username, password)
            refused = conn.send_message(msg)
            if refused:
                raise DeliveryError(f"recipients refused: {', '.join(sorted(refused))}")
    except DeliveryError:
        raise
    except (smtplib.SMTPException, OSError, ssl.SSLError) as e:
        raise DeliveryError(_one_line(e, password)) from None


async def send_email(cfg: Config, t: EmailTarget, body: dict[str, Any], timeout: float) -> None:
    try:
        await asyncio.wait_for(asyncio.to_thread(_smtp, cfg, t, body, timeout), timeout * 3)
    except TimeoutError:
        raise DeliveryError(f"no answer from {t.smtp.host}:{t.smtp.port} within {timeout * 3:.0f}s") from None
    except OSError as e:  # the password file
        raise DeliveryError(_one_line(e)) from None


async def send(cfg: Config, target: WebhookTarget | SlackTarget | EmailTarget, body: dict[str, Any]) -> None:
    """One attempt; raises DeliveryError."""
    timeout = cfg.notify.delivery.timeout
    if isinstance(target, WebhookTarget):
        await send_webhook(cfg, target, body, timeout)
    elif isinstance(target, SlackTarget):
        await send_slack(cfg, target, body, timeout)
    else:
        await send_email(cfg, target, body, timeout)
