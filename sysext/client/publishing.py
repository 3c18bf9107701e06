"""Publish exactly what a registry is missing.

The registry's read API (`GET /api/v1/extensions/NAME`) lists every image it has with its
sha256 and channels. For each local image the publisher decides:

* not there → upload it into the channel ("published");
* there with the same bytes and the channel → nothing to do ("already published");
* there with the same bytes in other channels only → promote it into the channel, no upload;
* there with other bytes → refused (published versions are immutable).

Deciding from the registry's own answer, not from local state, makes a re-run after a
failure half-way safe: what was uploaded is skipped, what was not is uploaded.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sysext.client.api import RegistryClient
from sysext.core.errors import SysextError


class PublishState(enum.Enum):
    PUBLISHED = "published"
    PROMOTED = "published (promoted)"
    ALREADY = "already published"


@dataclass(frozen=True)
class PublishOutcome:
    state: PublishState
    detail: str = ""


@dataclass
class Publisher:
    """Publishes images into one channel of one registry; safe to share between threads."""

    client: RegistryClient
    channel: str
    _known: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _max_upload: int = 0

    def check(self) -> None:
        """Fail before any build when the registry is unreachable or lacks the channel."""
        status = self.client.request("GET", "status")
        channels = status.get("channels") or []
        if channels and self.channel not in channels:
            raise SysextError(
                f"the registry at {self.client.base_url} has no channel {self.channel!r}",
                f"its channels: {', '.join(channels)}; pick one with --channel",
            )
        self._max_upload = int(status.get("max_upload_bytes") or 0)

    def published(self, name: str) -> dict[str, dict[str, Any]]:
        """The registry's images of extension `name`, by file name (asked once per name)."""
        with self._lock:
            if name in self._known:
                return self._known[name]
        try:
            detail = self.client.request("GET", f"extensions/{name}")
            images = {info["filename"]: info for info in detail.get("images", [])}
        except SysextError as exc:
            if "answered 404" not in exc.message:
                raise
            images = {}
        with self._lock:
            return self._known.setdefault(name, images)

    def publish(
        self, image: Path, name: str, sha256: str, advance: Callable[[int], None] | None = None
    ) -> PublishOutcome:
        info = self.published(name).get(image.name)
        if info is not None:
            if info["sha256"] != sha256:
                raise SysextError(
                    f"{image.name}: the registry has other bytes under this name "
                    f"(sha256 {info['sha256'][:16]}…, this build {sha256[:16]}…)",
                    "published versions are immutable: the inputs changed, or a newer sysext "
                    "packed them differently (its provenance file names the packing); keep "
                    "the published image or publish a new version",
                )
            if self.channel in info["channels"]:
                yanked = " (yanked)" if info.get("yanked") else ""
                where = ", ".join(info["channels"])
                return PublishOutcome(PublishState.ALREADY, f"in {where}{yanked}")
            self.client.request(
                "POST",
                f"extensions/{name}/versions/{info['version']}/promote",
                params={"channel": self.channel, "arch": info["arch"]},
            )
            return PublishOutcome(PublishState.PROMOTED, f"added to {self.channel}")
        size = image.stat().st_size
        if self._max_upload and size > self._max_upload:
            raise SysextError(
                f"{image.name}: {size} bytes is more than the registry accepts "
                f"({self._max_upload} bytes)",
                "ask the registry operator to raise SYSEXT_MAX_UPLOAD_BYTES (--max-upload)",
            )
        result = self.client.upload(image, name, self.channel, advance or _ignore)
        if not result.get("created", True):
            # Uploaded by someone else since we asked: same bytes, nothing changed.
            return PublishOutcome(PublishState.ALREADY, "identical bytes were already there")
        return PublishOutcome(PublishState.PUBLISHED, f"into {self.channel}")


def _ignore(amount: int) -> None:
    pass
