"""`sysext registry check|repair`: drift between the database and the public tree.

The checks themselves are consistency.py's (the same ones every write runs before it
commits); this module runs them over a whole data directory through a RegistryService and
fixes what it can. It sits above core.py, so the service never imports it back.
"""

from __future__ import annotations

from sqlalchemy import select

from registry.db.models import Image
from registry.errors import RegistryError
from registry.service import audit
from registry.service.consistency import (
    Problem,
    _short,
    checked_content,
    policy_reason,
    squatting_reason,
    unservable_reason,
)
from registry.service.core import RegistryService


def check(service: RegistryService) -> list[Problem]:
    """Every way the data directory differs from what the database says should be served."""
    settings = service.settings
    problems: list[Problem] = []
    with service.sessions() as session:
        images = list(session.scalars(select(Image)))
    groups: dict[tuple[str, str], list[Image]] = {}
    names = {image.name for image in images}
    for image in images:
        squatting = squatting_reason(image, names)
        if squatting:
            problems.append(
                Problem(
                    image.name,
                    None,
                    squatting,
                    "none automatic: stop publishing one of the two extensions and move its "
                    "hosts to another name",
                )
            )
        reason = unservable_reason(service.storage, image)
        if reason:
            problems.append(
                Problem(
                    image.name,
                    None,
                    f"{_short(image.filename)} cannot be served: {reason}",
                    "delete this row (it is in no served manifest)",
                )
            )
            continue
        policy = policy_reason(image)
        if policy:
            problems.append(
                Problem(image.name, None, policy, "none (served as before; yank it if unwanted)")
            )
        for channel in image.channel_names:
            groups.setdefault((image.name, channel), []).append(image)
    keyring = service.signer.public_keyring()
    for (name, channel), members in sorted(groups.items()):
        try:
            content = checked_content(
                settings, name, channel, members, service.held_for(name, channel, members)
            )
        except RegistryError as exc:
            problems.append(Problem(name, channel, exc.detail, "delete the unservable rows"))
            continue
        drift = service.storage.drift(content, keyring)
        if drift:
            problems.append(Problem(name, channel, drift, "materialize it from the database"))
    for name, channel in sorted(service.storage.published() - set(groups)):
        problems.append(
            Problem(name, channel, "published but unknown to the database", "unpublish it")
        )
    return problems


def repair(service: RegistryService) -> list[str]:
    """Fix what check() finds; returns one line per fixed problem, then what remains.

    Rows that cannot be served are deleted (no manifest ever listed them: materializing
    them failed); every directory is rebuilt from the database; unknown ones unpublished.
    Holds the writer lock, so a running server's writes wait meanwhile.
    """
    fixed: list[str] = []
    # The server's own writer lock (the flock, or PostgreSQL's advisory lock of everything).
    with service.writing(None) as session:
        for image in list(session.scalars(select(Image))):
            reason = unservable_reason(service.storage, image)
            if reason:
                fixed.append(f"deleted row {image.name} {_short(image.filename)}: {reason}")
                session.delete(image)
        # Audited with the rows it deletes, in their transaction (issue 19, finding 15):
        # repair is the one write that bypasses the API.
        audit.record(
            session,
            audit.Actor.system("registry repair"),
            audit.Action.REPAIR,
            "registry",
            {"deleted_rows": fixed[:100], "deleted_count": len(fixed)},
        )
        session.commit()
        drift = check(service)
        known = service.rematerialize(list(session.scalars(select(Image))))
        service.storage.remove_unknown(known)
    remaining = {p.line() for p in check(service)}
    fixed += [f"fixed {p.line()}" for p in drift if p.line() not in remaining]
    return fixed + [f"NOT FIXED {line}" for line in sorted(remaining)]
