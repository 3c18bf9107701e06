"""What a boot did with each extension: merged or not (and why), its units and their state,
failed units and their journal. Reads the image on the host and asks the booted
container's own systemd (systemctl show, journalctl); the pure parts are tested alone."""

from __future__ import annotations

import configparser
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from sysext.boot.container import BootResult, Container
from sysext.image.lint import HostVerdict
from sysext.image.read import ImageContents

SYSTEM_UNIT_DIR = "usr/lib/systemd/system"
UNIT_SUFFIXES = (".service", ".socket", ".timer", ".path", ".mount")
# Dependencies through which a drop-in on a target starts something when the target is up.
STARTING_KEYS = ("Upholds", "Wants", "Requires")
SHOW_PROPERTIES = ("Id", "LoadState", "ActiveState", "SubState", "Result", "UnitFileState")


@dataclass(frozen=True)
class UnitState:
    name: str
    load: str
    active: str
    sub: str
    result: str
    meant_to_start: bool  # the extension pulls it in (Upholds=, Wants=, .wants/ link)

    @property
    def failed(self) -> bool:
        return self.active == "failed" or self.load not in ("loaded", "")

    @property
    def ok(self) -> bool:
        """A unit meant to start is active; any other unit at least did not fail."""
        if self.failed:
            return False
        return self.active == "active" if self.meant_to_start else True


@dataclass(frozen=True)
class ExtensionReport:
    name: str
    image: Path
    verdict: HostVerdict | None  # `sysext validate` against this root's os-release
    merged: bool
    units: tuple[UnitState, ...]

    @property
    def ok(self) -> bool:
        return self.merged and all(unit.ok for unit in self.units)


@dataclass(frozen=True)
class TryReport:
    boot: BootResult
    extensions: tuple[ExtensionReport, ...]
    failed_units: tuple[str, ...]
    journal: Mapping[str, tuple[str, ...]]  # failed unit → its last journal lines

    @property
    def ok(self) -> bool:
        return all(e.ok for e in self.extensions) and not self.failed_units


# -- pure: what an image ships and means to start ------------------------------------------


def shipped_units(contents: ImageContents) -> tuple[str, ...]:
    """Unit files the image installs in usr/lib/systemd/system (templates left out)."""
    names = []
    for entry in contents.entries:
        path = PurePosixPath(entry.path)
        in_unit_dir = str(path.parent) == SYSTEM_UNIT_DIR and path.suffix in UNIT_SUFFIXES
        if in_unit_dir and "@." not in path.name and entry.kind in ("file", "symlink"):
            names.append(path.name)
    return tuple(sorted(set(names)))


def units_meant_to_start(
    contents: ImageContents, read: Mapping[str, bytes] | None = None
) -> tuple[str, ...]:
    """Units the image pulls in by itself: `.wants/`/`.requires/`/`.upholds/` links and
    Upholds=/Wants=/Requires= in drop-ins for targets (`multi-user.target.d/10-x.conf`).
    `read` maps drop-in paths to their bytes (the caller reads them from the image)."""
    found: set[str] = set()
    for entry in contents.entries:
        path = PurePosixPath(entry.path)
        if not str(path).startswith(SYSTEM_UNIT_DIR + "/") or len(path.parts) < 6:
            continue
        holder = path.parent.name
        if holder.endswith((".wants", ".requires", ".upholds")) and "@" not in path.name:
            found.add(path.name)
        elif holder.endswith(".target.d") and path.suffix == ".conf" and read is not None:
            data = read.get(entry.path)
            if data is not None:
                found.update(starting_dependencies(data.decode("utf-8", "replace")))
    return tuple(sorted(found))


def drop_in_paths(contents: ImageContents) -> tuple[str, ...]:
    """Target drop-ins whose text `units_meant_to_start` needs."""
    return tuple(
        e.path
        for e in contents.entries
        if e.path.startswith(SYSTEM_UNIT_DIR + "/")
        and PurePosixPath(e.path).parent.name.endswith(".target.d")
        and e.path.endswith(".conf")
    )


def starting_dependencies(text: str) -> list[str]:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text)
    except configparser.Error:
        return []
    if not parser.has_section("Unit"):
        return []
    names: list[str] = []
    for key in STARTING_KEYS:
        if parser.has_option("Unit", key):
            names += parser.get("Unit", key).split()
    return names


def parse_show(text: str) -> list[dict[str, str]]:
    """`systemctl show -p A -p B U1 U2…`: one block of KEY=VALUE lines per unit."""
    blocks: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for line in [*text.splitlines(), ""]:
        if not line.strip():
            if current:
                blocks.append(current)
                current = {}
            continue
        key, _, value = line.partition("=")
        current[key] = value
    return blocks


# -- asking the booted container ------------------------------------------------------------


def unit_states(box: Container, units: Sequence[str], meant: Iterable[str]) -> list[UnitState]:
    if not units:
        return []
    argv = ["systemctl", "show", "--no-pager", *(f"--property={p}" for p in SHOW_PROPERTIES)]
    blocks = parse_show(box.text([*argv, "--", *units]))
    wanted = set(meant)
    states = []
    for name, block in zip(units, blocks, strict=False):
        states.append(
            UnitState(
                name=name,
                load=block.get("LoadState", ""),
                active=block.get("ActiveState", ""),
                sub=block.get("SubState", ""),
                result=block.get("Result", ""),
                meant_to_start=name in wanted,
            )
        )
    return states


def merged_extensions(box: Container) -> set[str]:
    """Names whose release file is visible in the merged /usr: what systemd-sysext merged."""
    listing = box.text(["ls", "-1", "/usr/lib/extension-release.d"])
    return {
        line.removeprefix("extension-release.")
        for line in listing.split()
        if line.startswith("extension-release.")
    }


def failed_units(box: Container) -> list[str]:
    text = box.text(["systemctl", "list-units", "--failed", "--plain", "--no-legend", "--all"])
    return [line.split()[0] for line in text.splitlines() if line.split()]


def journal_of(box: Container, unit: str, first: int = 10, last: int = 4) -> tuple[str, ...]:
    """The unit's journal of this boot: its first lines (the first failure names the cause;
    restarts only repeat "Failed with result") and its last ones."""
    argv = ["journalctl", "--boot", f"--unit={unit}", "--no-pager", "--output=short-monotonic"]
    lines = [line for line in box.text([*argv, "--quiet"]).splitlines() if line.strip()]
    if len(lines) <= first + last:
        return tuple(lines)
    return (*lines[:first], f"… {len(lines) - first - last} more lines …", *lines[-last:])


def render(report: TryReport) -> str:
    """The human report `sysext try` prints."""
    out = [f"booted in {report.boot.seconds:.1f} s, systemd says: {report.boot.state}"]
    for ext in report.extensions:
        if ext.merged:
            head = f"{ext.name}: merged"
        else:
            why = ext.verdict.reason if ext.verdict and not ext.verdict.merges else None
            head = f"{ext.name}: NOT merged" + (f" ({why})" if why else "")
        out.append(f"\n{head}  [{ext.image.name}]")
        if not ext.units:
            out.append("  no units")
        for unit in ext.units:
            mark = "ok  " if unit.ok else "FAIL"
            why = " (pulled in by the extension)" if unit.meant_to_start else ""
            state = f"{unit.active}/{unit.sub}" if unit.load == "loaded" else unit.load
            out.append(f"  {mark} {unit.name:<34} {state}{why}")
    out.append("\nfailed units: " + (", ".join(report.failed_units) or "none"))
    for name, lines in report.journal.items():
        out.append(f"\njournal of {name}:")
        out += [f"  {line}" for line in lines] or ["  (empty)"]
    return "\n".join(out)
