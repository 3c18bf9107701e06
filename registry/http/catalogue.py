"""What the web catalogue shows, computed from image rows: pure functions, no I/O.

"Installable" means what a host can get today: an image that is not yanked, in a channel's
manifest. The pages offer instructions only for such combinations (channel, architecture
and, for extensions built per OS version, the host's VERSION_ID), so no link or snippet
they show can answer 404.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from registry.db.models import Image, as_utc
from sysext.core.urls import DEFAULT_CHANNEL
from sysext.image.summary import ImageSummary
from sysext.provision.model import Variant
from sysext.systemd.versioning import version_key


def channel_order(channels: Iterable[str], configured: Sequence[str]) -> list[str]:
    """Channels in the registry's configured order (stable first), unknown ones after."""
    rank = {c: n for n, c in enumerate(configured)}
    return sorted(set(channels), key=lambda c: (rank.get(c, len(rank)), c))


def _newest_first(images: Iterable[Image]) -> list[Image]:
    return sorted(
        images,
        key=lambda i: (version_key(i.release_version), version_key(i.os_version_id or ""), i.arch),
        reverse=True,
    )


# (name, channel) → version → rollout stage, of versions not offered to every host yet
# (rollouts.unreleased): the catalogue names them apart, never as a channel's newest.
Unreleased = Mapping[tuple[str, str], Mapping[str, str]]


@dataclass(frozen=True)
class ChannelLatest:
    channel: str
    version: str | None  # None: only versions still rolling out
    rolling_out: tuple[tuple[str, str], ...] = ()  # (version, stage), newer than `version`


@dataclass(frozen=True)
class ExtensionCard:
    """One extension on the home page."""

    name: str
    description: str | None
    latest: tuple[ChannelLatest, ...]  # per channel with an installable image
    arches: tuple[str, ...]  # architectures with an installable image
    versions: int  # distinct versions (an OS-bound version built for 3 OS versions is 1)
    os_versions: tuple[str, ...]  # VERSION_IDs of an OS-bound extension, newest first
    fully_yanked: bool
    updated: dt.datetime

    @property
    def os_bound(self) -> bool:
        return bool(self.os_versions)


def extension_cards(
    images: Iterable[Image],
    configured_channels: Sequence[str],
    query: str = "",
    unreleased: Unreleased | None = None,
) -> list[ExtensionCard]:
    by_name: dict[str, list[Image]] = {}
    for image in images:
        by_name.setdefault(image.name, []).append(image)
    needle = query.strip().lower()
    cards = []
    for name in sorted(by_name):
        members = _newest_first(by_name[name])
        live = [i for i in members if not i.yanked]
        description = (live or members)[0].summary.description
        if needle and needle not in name.lower() and needle not in (description or "").lower():
            continue
        latest = []
        for channel in channel_order(
            (c for i in live for c in i.channel_names), configured_channels
        ):
            held = (unreleased or {}).get((name, channel), {})
            listed = [i for i in live if channel in i.channel_names]
            newest = next((i for i in listed if i.release_version not in held), None)
            rolling = []
            for version in dict.fromkeys(i.release_version for i in listed):
                if version in held and (
                    newest is None or version_key(version) > version_key(newest.release_version)
                ):
                    rolling.append((version, held[version]))
            latest.append(
                ChannelLatest(channel, newest.release_version if newest else None, tuple(rolling))
            )
        os_versions = {i.os_version_id for i in members if i.os_version_id}
        cards.append(
            ExtensionCard(
                name=name,
                description=description,
                latest=tuple(latest),
                arches=tuple(sorted({i.arch for i in live})),
                versions=len({i.release_version for i in members}),
                os_versions=tuple(sorted(os_versions, key=version_key, reverse=True)),
                fully_yanked=not live,
                updated=as_utc(max(i.created_at for i in members)),
            )
        )
    return cards


@dataclass(frozen=True)
class Choice:
    """The reader's choices, each one valid for what is installable."""

    channel: str
    arch: str
    variant: Variant
    os_version: str | None  # None: the extension is not OS-bound
    # `sysext butane --require-signed --systemd-version N` (docs/verity.md): offered on the
    # page only for a verity-signed image; the provisioning code refuses what cannot be.
    require_signed: bool = False
    systemd_version: int | None = None


@dataclass(frozen=True)
class ChoiceOutcome:
    choice: Choice | None  # None: nothing is installable
    notices: tuple[str, ...]  # requested values that were replaced, and why


@dataclass(frozen=True)
class Offer:
    """Every installable (channel, arch, os_version) of one extension."""

    channels: tuple[str, ...]
    arches: dict[str, tuple[str, ...]]  # channel -> arches
    os_versions: dict[tuple[str, str], tuple[str, ...]]  # (channel, arch) -> newest first
    os_bound: bool

    @classmethod
    def of(cls, images: Sequence[Image], configured_channels: Sequence[str]) -> Offer:
        live = [i for i in images if not i.yanked]
        channels = channel_order((c for i in live for c in i.channel_names), configured_channels)
        arches: dict[str, tuple[str, ...]] = {}
        os_versions: dict[tuple[str, str], tuple[str, ...]] = {}
        for channel in channels:
            in_channel = [i for i in live if channel in i.channel_names]
            arches[channel] = tuple(sorted({i.arch for i in in_channel}))
            for arch in arches[channel]:
                found = {i.os_version_id for i in in_channel if i.arch == arch and i.os_version_id}
                os_versions[(channel, arch)] = tuple(sorted(found, key=version_key, reverse=True))
        return cls(tuple(channels), arches, os_versions, any(i.os_version_id for i in images))

    def choose(
        self,
        channel: str | None,
        arch: str | None,
        variant: str | None,
        os_version: str | None,
    ) -> ChoiceOutcome:
        """Honour each requested value that is installable; otherwise pick a default."""
        if not self.channels:
            return ChoiceOutcome(None, ())
        notices = []
        default_channel = DEFAULT_CHANNEL if DEFAULT_CHANNEL in self.channels else self.channels[0]
        if channel and channel not in self.channels:
            notices.append(f"Nothing is installable from channel {channel!r}.")
        chosen_channel = channel if channel in self.channels else default_channel
        arches = self.arches[chosen_channel]
        default_arch = "x86-64" if "x86-64" in arches else arches[0]
        if arch and arch not in arches:
            notices.append(f"Channel {chosen_channel} has no installable {arch!r} image.")
        chosen_arch = arch if arch in arches else default_arch
        variants = {v.value: v for v in Variant}
        if variant and variant not in variants:
            notices.append(f"Unknown variant {variant!r}.")
        chosen_variant = variants.get(variant or "", Variant.FLATCAR)
        chosen_os: str | None = None
        if self.os_bound:
            available = self.os_versions[(chosen_channel, chosen_arch)]
            if os_version and os_version not in available:
                notices.append(
                    f"No image for OS version {os_version!r} in {chosen_channel} ({chosen_arch})."
                )
            chosen_os = os_version if os_version in available else available[0]
        return ChoiceOutcome(
            Choice(chosen_channel, chosen_arch, chosen_variant, chosen_os), tuple(notices)
        )


@dataclass(frozen=True)
class VersionRow:
    version: str
    os_version_id: str | None
    arch: str
    filename: str
    sha256: str
    size: int
    created: dt.datetime
    yanked: bool
    yanked_at: dt.datetime | None
    verity_signer: str | None = None  # a signed verity DDI: its certificate's SHA-256
    rolling_out: str | None = None  # the rollout's stage while not offered to every host


@dataclass(frozen=True)
class ChannelVersions:
    channel: str
    rows: tuple[VersionRow, ...]


def versions_by_channel(
    images: Sequence[Image],
    configured_channels: Sequence[str],
    unreleased: Mapping[str, Mapping[str, str]] | None = None,
) -> list[ChannelVersions]:
    """Every image (yanked ones too) under each channel it is published in, newest first;
    `unreleased`: channel → version → stage of this extension's rollouts in progress."""
    out = []
    for channel in channel_order((c for i in images for c in i.channel_names), configured_channels):
        held = (unreleased or {}).get(channel, {})
        rows = tuple(
            VersionRow(
                version=i.release_version,
                os_version_id=i.os_version_id,
                arch=i.arch,
                filename=i.filename,
                sha256=i.sha256,
                size=i.size,
                created=as_utc(i.created_at),
                yanked=i.yanked,
                yanked_at=as_utc(i.yanked_at) if i.yanked_at else None,
                verity_signer=i.verity_signer,
                rolling_out=held.get(i.release_version),
            )
            for i in _newest_first(images)
            if channel in i.channel_names
        )
        out.append(ChannelVersions(channel, rows))
    return out


def describing_image(
    images: Sequence[Image],
    choice: Choice | None,
    unreleased: Mapping[str, Mapping[str, str]] | None = None,
) -> Image | None:
    """The image whose fields describe the extension: the newest installable one for the
    reader's choice (a beta may ship more than stable) that the channel offers everyone
    (not one still rolling out: `unreleased` as in versions_by_channel), else the newest
    of all."""
    ordered = _newest_first(images)
    if choice is not None:
        held = (unreleased or {}).get(choice.channel, {})
        for image in ordered:
            if (
                not image.yanked
                and image.release_version not in held
                and choice.channel in image.channel_names
                and image.arch == choice.arch
                and image.os_version_id == choice.os_version
            ):
                return image
    return ordered[0] if ordered else None


def summary_of(image: Image | None) -> ImageSummary:
    return image.summary if image is not None else ImageSummary()
