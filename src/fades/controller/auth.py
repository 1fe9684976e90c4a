"""Bearer tokens: each token belongs to one tenant.

The tokens file is YAML ``{tokens: {<token>: <tenant>}}``. :func:`create_tokens_file` writes
one with a random token (mode 0600) when a controller starts without any.

A token is looked up by its SHA-256 (one dict lookup, whatever the number of tokens) and then
compared in constant time. The check runs on the event loop: it is microseconds of work, and
an async dependency saves the thread hop FastAPI makes for a synchronous one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated

import yaml
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from fades.errors import ControllerError, Unauthorized

_TENANT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class Tokens:
    """Token -> tenant, compared in constant time."""

    def __init__(self, tokens: Mapping[str, str] | None = None) -> None:
        self._tokens: dict[str, str] = {}
        #: sha256(token) -> (token, tenant)
        self._by_hash: dict[bytes, tuple[bytes, str]] = {}
        for token, tenant in (tokens or {}).items():
            if not isinstance(token, str) or len(token) < 8:
                raise ControllerError("every bearer token must be a string of 8+ characters")
            if not isinstance(tenant, str) or not _TENANT.match(tenant):
                raise ControllerError(f"tenant {tenant!r} of a token is not a valid tenant name")
            self._tokens[token] = tenant
            self._by_hash[hashlib.sha256(token.encode()).digest()] = (token.encode(), tenant)

    @classmethod
    def load(cls, path: str | Path) -> Tokens:
        """Read a tokens file.

        Raises:
            ControllerError: unreadable, not YAML, or not ``{tokens: {token: tenant}}``.
        """
        p = Path(path)
        try:
            raw = yaml.safe_load(p.read_text())
        except OSError as exc:
            raise ControllerError(f"cannot read tokens file {p}: {exc.strerror}") from None
        except yaml.YAMLError as exc:
            raise ControllerError(f"tokens file {p} is not valid YAML: {exc}") from None
        if not isinstance(raw, dict) or not isinstance(raw.get("tokens"), dict):
            raise ControllerError(
                f"tokens file {p}: expected a mapping 'tokens: {{TOKEN: TENANT}}'"
            )
        return cls({str(k): v for k, v in raw["tokens"].items()})

    def tenant(self, token: str | None) -> str:
        """The tenant a token belongs to.

        Raises:
            Unauthorized: no token, or one this controller does not know.
        """
        if not token:
            raise Unauthorized("missing bearer token (send 'Authorization: Bearer <token>')")
        raw = token.encode()
        held = self._by_hash.get(hashlib.sha256(raw).digest())
        if held is None or not hmac.compare_digest(held[0], raw):
            raise Unauthorized("unknown bearer token")
        return held[1]

    def tenants(self) -> list[str]:
        return sorted(set(self._tokens.values()))

    def __len__(self) -> int:
        return len(self._tokens)


def create_tokens_file(path: str | Path, tenant: str = "facilities") -> str:
    """Write a tokens file holding one random token for ``tenant`` (mode 0600); returns it."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(24)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        yaml.safe_dump({"tokens": {token: tenant}}, f)
    return token


_bearer = HTTPBearer(auto_error=False, description="a token from the controller's tokens file")


async def request_tenant(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    """FastAPI dependency: the tenant of the request's bearer token (Unauthorized, 401).
    Async, so FastAPI runs it on the event loop instead of a worker thread."""
    tokens: Tokens = request.app.state.controller.tokens
    return tokens.tenant(creds.credentials if creds else None)


#: the caller's tenant, from its bearer token (401 without a known token)
Tenant = Annotated[str, Depends(request_tenant)]


# --- the console's session cookie (console) -----------------------------------------------------
#: the console's cookie: the tenant's own token, ``HttpOnly; SameSite=Strict; Path=/``
CONSOLE_COOKIE = "fades_console"


async def cookie_tenant(request: Request) -> str:
    """FastAPI dependency of the console's routes: the tenant of the token in the console's
    cookie, checked exactly like a bearer token (Unauthorized, 401, without a known one)."""
    tokens: Tokens = request.app.state.controller.tokens
    return tokens.tenant(request.cookies.get(CONSOLE_COOKIE))


#: the console caller's tenant, from its session cookie (401 without a known token)
CookieTenant = Annotated[str, Depends(cookie_tenant)]
