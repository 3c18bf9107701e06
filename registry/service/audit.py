"""The audit trail: every write through the API, with who, what, when and from where.

Entries are written in the same database transaction as the change they describe (so a
committed publish always has its entry and a failed one none), read by the admin
(`GET /api/v1/audit`, `sysext audit`) and never changed: the API has no route that edits
or deletes them, the ORM refuses to flush such a change, migration 0005 makes the
database refuse UPDATE/DELETE on the table and migration 0006 also REPLACE (SQLite) and
TRUNCATE (PostgreSQL).

Besides the writes themselves (issue 19, finding 15): write requests refused with 401/403
(`write.denied`, at most DENIED_PER_MINUTE per worker so that a flood of them cannot
flood the database, the rest counted in the next entry), key-rotation phases the registry
enters on its own (`key.advance` by `registry`), and `sysext registry repair`.

Every recorded text is cut to its column and client addresses are escaped, so no input
(a long token description, a forged X-Forwarded-For) can turn a write into a database
error (finding 13).
"""

from __future__ import annotations

import datetime as dt
import enum
import ipaddress
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import DateTime, Integer, String, Text, event, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from registry.db.models import Base, Token, as_utc, utcnow
from registry.errors import RegistryError
from registry.service.auth import Principal
from sysext.core.logfmt import log_value

if TYPE_CHECKING:
    from starlette.requests import Request


class Action(enum.StrEnum):
    PUBLISH = "image.publish"
    YANK = "image.yank"
    UNYANK = "image.unyank"
    PROMOTE = "image.promote"
    TOKEN_CREATE = "token.create"
    TOKEN_REVOKE = "token.revoke"
    KEY_ROTATE = "key.rotate"
    KEY_ADVANCE = "key.advance"
    DENIED = "write.denied"
    REPAIR = "registry.repair"
    ROLLOUT_SET = "rollout.set"
    ROLLOUT_HALT = "rollout.halt"
    ROLLOUT_RESUME = "rollout.resume"
    # Changes the registry makes on its own (schedule, canary passed, auto-pause): the
    # principal is "registry", the client empty.
    ROLLOUT_ADVANCE = "rollout.advance"
    ROLLOUT_CANARY_PASSED = "rollout.canary-passed"
    ROLLOUT_PAUSED = "rollout.auto-paused"


class AuditEntry(Base):
    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    token_id: Mapped[int | None] = mapped_column(Integer, nullable=True)  # None: admin
    principal: Mapped[str] = mapped_column(String(255))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(512))
    detail: Mapped[str] = mapped_column(Text, default="{}")
    client: Mapped[str] = mapped_column(String(255), default="")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": as_utc(self.at).isoformat(),
            "token_id": self.token_id,
            "principal": self.principal,
            "action": self.action,
            "target": self.target,
            "detail": json.loads(self.detail or "{}"),
            "client": self.client,
        }


def _refuse_change(_mapper: Any, _connection: Any, target: AuditEntry) -> None:
    raise RegistryError(500, f"audit entry {target.id} cannot be changed: the log is append-only")


event.listen(AuditEntry, "before_update", _refuse_change)
event.listen(AuditEntry, "before_delete", _refuse_change)


# Column sizes of audit_log (migration 0005): what is recorded is cut to fit.
PRINCIPAL_MAX = 255
ACTION_MAX = 64
TARGET_MAX = 512
CLIENT_MAX = 255
# The registry itself (automatic key phases, `registry repair`): no token at all.
SYSTEM = Principal(None, ())


@dataclass(frozen=True)
class Actor:
    """Who asks for a write, and from where: what every entry records.

    `name` overrides the principal's name: "registry" for what the registry does on its
    own, "anonymous" for a refused request that presented no valid token.
    """

    principal: Principal
    client: str
    name: str | None = None

    @classmethod
    def of(cls, principal: Principal, request: Request) -> Actor:
        return cls(principal, client_address(request))

    @classmethod
    def system(cls, what: str = "registry") -> Actor:
        return cls(SYSTEM, "", what)


def client_address(request: Request) -> str:
    """The peer address; behind a proxy named in `forwarded_allow_ips`, the address that
    proxy forwarded (uvicorn sets it), as recorded text (client_text)."""
    return client_text(request.client.host if request.client else "")


def client_text(host: str) -> str:
    """An address as the trail records it: an IP address in its normal form, anything
    else (a trusted proxy's odd X-Forwarded-For) escaped and cut to the column."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    return _fit(log_value(host) if host else "", CLIENT_MAX)


def _fit(text: str, size: int) -> str:
    """`text` cut to `size` characters (varchar(size) on PostgreSQL refuses longer)."""
    return text if len(text) <= size else text[: size - 1] + "…"


def _principal_name(session: Session, actor: Actor) -> str:
    if actor.name is not None:
        return actor.name
    principal = actor.principal
    if principal.is_admin:
        return "admin"
    token = session.get(Token, principal.token_id)
    name = token.description.strip() if token is not None else ""
    return name or f"token {principal.token_id}"


def record(
    session: Session, actor: Actor, action: Action, target: str, detail: dict[str, Any]
) -> None:
    """Add an entry to `session`; it commits with the change it describes."""
    session.add(
        AuditEntry(
            at=utcnow(),
            token_id=actor.principal.token_id,
            principal=_fit(_principal_name(session, actor), PRINCIPAL_MAX),
            action=_fit(str(action), ACTION_MAX),
            target=_fit(target, TARGET_MAX),
            detail=json.dumps(detail, sort_keys=True),
            client=_fit(actor.client, CLIENT_MAX),
        )
    )


def record_registry(session: Session, action: Action, target: str, detail: dict[str, Any]) -> None:
    """An entry for a change the registry made by itself (a rollout schedule step)."""
    session.add(
        AuditEntry(
            at=utcnow(),
            token_id=None,
            principal="registry",
            action=str(action),
            target=target,
            detail=json.dumps(detail, sort_keys=True),
            client="",
        )
    )


def record_now(
    sessions: Callable[[], Session],
    actor: Actor,
    action: Action,
    target: str,
    detail: dict[str, Any],
) -> None:
    """An entry in its own transaction, for writes outside the database (key files)."""
    with sessions() as session:
        record(session, actor, action, target, detail)
        session.commit()


def entries(
    session: Session, *, limit: int = 100, action: str | None = None, after_id: int = 0
) -> list[AuditEntry]:
    """Newest first; `after_id` pages forward from a known entry (tail -f style)."""
    query = select(AuditEntry).where(AuditEntry.id > after_id)
    if action:
        query = query.where(AuditEntry.action == action)
    return list(session.scalars(query.order_by(AuditEntry.id.desc()).limit(limit)))
