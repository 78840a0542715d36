"""OIDC login for SSH users: device authorization grant, ID token checks, identities and key bindings."""
