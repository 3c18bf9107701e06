"""Upload tokens: who may write what.

`SYSEXT_ADMIN_TOKEN` (server environment) grants everything, including managing tokens.
Scoped tokens look like `sxt_<id>_<secret>`; the database keeps only the SHA-256 of the
secret, and comparisons are constant-time (`hmac.compare_digest`), so neither a database
leak nor response timing reveals a usable token. Scopes are shell-style globs over
extension names (`podman`, `k*`).
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy.orm import Session

from registry.db import Token, utcnow
from registry.errors import RegistryError

TOKEN_PREFIX = "sxt_"


@dataclass(frozen=True)
class Principal:
    """Who made a request: the admin, or a scoped token."""

    token_id: int | None  # None: the admin token
    scopes: tuple[str, ...]

    @property
    def is_admin(self) -> bool:
        return self.token_id is None

    def may_write(self, name: str) -> bool:
        if self.is_admin:
            return True
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.scopes)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def authenticate(session: Session, presented: str | None, admin_token: str | None) -> Principal:
    """The principal for a presented token; RegistryError 401 when missing or unknown."""
    if presented is None:
        raise RegistryError(
            401, "authentication required: send 'Authorization: Bearer TOKEN' (SYSEXT_TOKEN)"
        )
    if admin_token and hmac.compare_digest(_digest(presented), _digest(admin_token)):
        return Principal(None, ("*",))
    if presented.startswith(TOKEN_PREFIX):
        token_id, _, secret = presented[len(TOKEN_PREFIX) :].partition("_")
        if token_id.isdigit() and len(token_id) < 10 and secret:
            token = session.get(Token, int(token_id))
            if (
                token is not None
                and token.revoked_at is None
                and hmac.compare_digest(token.secret_sha256, _digest(secret))
            ):
                return Principal(token.id, tuple(token.scope_list))
    raise RegistryError(401, "invalid or revoked token")


def require_scope(principal: Principal, name: str) -> None:
    if not principal.may_write(name):
        raise RegistryError(
            403,
            f"this token may not write extension {name!r} (scopes: {', '.join(principal.scopes)})",
        )


def require_admin(principal: Principal) -> None:
    if not principal.is_admin:
        raise RegistryError(403, "only the admin token (SYSEXT_ADMIN_TOKEN) may manage tokens")


def scope_problem(pattern: str) -> str | None:
    if not pattern or any(c.isspace() for c in pattern) or "/" in pattern:
        return f"invalid scope {pattern!r}: a glob over extension names, e.g. 'podman' or 'k*'"
    return None


def create_token(session: Session, scopes: list[str], description: str) -> tuple[Token, str]:
    """Store a new token; returns it and the one-time plain-text value."""
    if not scopes:
        raise RegistryError(422, "a token needs at least one scope")
    for pattern in scopes:
        problem = scope_problem(pattern)
        if problem:
            raise RegistryError(422, problem)
    secret = secrets.token_urlsafe(32)
    token = Token(
        secret_sha256=_digest(secret),
        scopes="\n".join(scopes),
        description=description,
        created_at=utcnow(),
    )
    session.add(token)
    session.flush()
    return token, f"{TOKEN_PREFIX}{token.id}_{secret}"
