"""Upload tokens: who may write what.

`SYSEXT_ADMIN_TOKEN` (server environment) grants everything, including managing tokens.
Scoped tokens look like `sxt_<id>_<secret>`; the database keeps only the SHA-256 of the
secret, and comparisons are constant-time (`hmac.compare_digest`), so neither a database
leak nor response timing reveals a usable token. Scopes are shell-style globs over
extension names (`podman`, `k*`). A token may also expire, and may be limited to some
channels (issue 13): a CI token that publishes to `beta` only, while promotion to `stable`
needs a token allowed there; yank and promote stay within the token's channels.
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import hashlib
import hmac
import secrets
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy.orm import Session

from registry.db.models import Token, as_utc, utcnow
from registry.errors import RegistryError

TOKEN_PREFIX = "sxt_"


@dataclass(frozen=True)
class Principal:
    """Who made a request: the admin, or a scoped token."""

    token_id: int | None  # None: the admin token
    scopes: tuple[str, ...]
    channels: tuple[str, ...] | None = None  # None: every channel

    @property
    def is_admin(self) -> bool:
        return self.token_id is None

    def may_write(self, name: str) -> bool:
        if self.is_admin:
            return True
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.scopes)

    def may_use_channel(self, channel: str) -> bool:
        return self.channels is None or channel in self.channels


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
        # isdigit() alone accepts '²' and other digits int() refuses: ASCII only.
        if token_id.isascii() and token_id.isdigit() and len(token_id) < 10 and secret:
            token = session.get(Token, int(token_id))
            if (
                token is not None
                and token.revoked_at is None
                and hmac.compare_digest(token.secret_sha256, _digest(secret))
            ):
                if token.expires_at is not None and as_utc(token.expires_at) <= utcnow():
                    raise RegistryError(
                        401,
                        f"token {token.id} expired at {as_utc(token.expires_at).isoformat()}; "
                        "ask the registry admin for a new one",
                    )
                channels = token.channel_list
                return Principal(
                    token.id, tuple(token.scope_list), None if channels is None else tuple(channels)
                )
    raise RegistryError(401, "invalid or revoked token")


def require_scope(principal: Principal, name: str) -> None:
    if not principal.may_write(name):
        raise RegistryError(
            403,
            f"this token may not write extension {name!r} (scopes: {', '.join(principal.scopes)})",
        )


def require_channels(principal: Principal, channels: Iterable[str], action: str) -> None:
    """403 unless the token may act in every one of `channels`."""
    outside = sorted(c for c in set(channels) if not principal.may_use_channel(c))
    if outside:
        allowed = ", ".join(principal.channels or ())
        raise RegistryError(
            403,
            f"this token may {action} only in {allowed or 'no channel'}; "
            f"not in {', '.join(outside)}",
        )


def authorize_write(
    session: Session, principal: Principal, name: str, channels: Iterable[str], action: str
) -> None:
    """The one authorization check of a write, run under its writer lock before it commits.

    `channels` is exactly the set of channels the write changes, computed in the same
    transaction, so no query value and no concurrent promote can widen what was checked
    (issue 19, finding 1). The token is read again here: one revoked or expired while
    its request ran (a long upload) no longer commits anything (finding 3).

    On PostgreSQL the token row is read `FOR SHARE` and stays locked until the commit, so
    a revocation either committed before (and is seen here) or waits for this write. On
    SQLite that holds only once the transaction has written (it then has the database's
    one write lock and reads the newest state): a publish, whose upload may be stored for
    a while after the first check, calls this again just before its commit.
    """
    if not principal.is_admin:
        token = session.get(
            Token, principal.token_id, populate_existing=True, with_for_update={"read": True}
        )
        if token is None or token.revoked_at is not None:
            raise RegistryError(401, f"token {principal.token_id} was revoked; nothing was changed")
        if token.expires_at is not None and as_utc(token.expires_at) <= utcnow():
            raise RegistryError(
                401,
                f"token {token.id} expired at {as_utc(token.expires_at).isoformat()}; "
                "nothing was changed, ask the registry admin for a new one",
            )
        channel_list = token.channel_list
        # The row is the truth: a token narrowed since the request began is narrowed now.
        principal = Principal(
            token.id,
            tuple(token.scope_list),
            None if channel_list is None else tuple(channel_list),
        )
    require_scope(principal, name)
    require_channels(principal, channels, action)


def require_admin(principal: Principal, action: str) -> None:
    """403 unless the admin token asks; `action` says what for (e.g. "rotate the signing key")."""
    if not principal.is_admin:
        raise RegistryError(403, f"only the admin token (SYSEXT_ADMIN_TOKEN) may {action}")


def scope_problem(pattern: str) -> str | None:
    if not pattern or any(c.isspace() for c in pattern) or "/" in pattern:
        return f"invalid scope {pattern!r}: a glob over extension names, e.g. 'podman' or 'k*'"
    return None


def create_token(
    session: Session,
    scopes: list[str],
    description: str,
    *,
    channels: list[str] | None = None,
    expires_at: dt.datetime | None = None,
    known_channels: tuple[str, ...] = (),
) -> tuple[Token, str]:
    """Store a new token; returns it and the one-time plain-text value.

    `channels` None: every channel; `expires_at` None: never expires.
    """
    if not scopes:
        raise RegistryError(422, "a token needs at least one scope")
    for pattern in scopes:
        problem = scope_problem(pattern)
        if problem:
            raise RegistryError(422, problem)
    if channels is not None:
        if not channels:
            raise RegistryError(422, "a token limited to channels needs at least one")
        unknown = sorted(set(channels) - set(known_channels))
        if unknown:
            raise RegistryError(
                422,
                f"unknown channel {', '.join(unknown)} (this registry has: "
                f"{', '.join(known_channels)})",
            )
    if expires_at is not None:
        try:
            expires_at = as_utc(expires_at).astimezone(dt.UTC).replace(microsecond=0)
        except OverflowError:
            # 9999-12-31T23:59:59-12:00 is in year 10000 in UTC (was: 500, finding 12).
            raise RegistryError(
                422,
                f"expiry {expires_at.isoformat()} is outside the years 1-9999 in UTC; "
                "give a date such as 2030-01-01T00:00:00Z, or null for never",
            ) from None
        if expires_at <= utcnow():
            raise RegistryError(422, f"expiry {expires_at.isoformat()} is in the past")
    secret = secrets.token_urlsafe(32)
    token = Token(
        secret_sha256=_digest(secret),
        scopes="\n".join(scopes),
        description=description,
        created_at=utcnow(),
        channels=None if channels is None else "\n".join(sorted(set(channels))),
        expires_at=expires_at,
    )
    session.add(token)
    session.flush()
    return token, f"{TOKEN_PREFIX}{token.id}_{secret}"
