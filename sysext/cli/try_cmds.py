"""`sysext try`: boot extensions under a real systemd and report what became of them."""

from __future__ import annotations

import json
import signal
import sys
import tempfile
from pathlib import Path
from types import FrameType

import typer

from sysext.core.errors import SysextError
from sysext.core.steps import console


def _terminate(signum: int, frame: FrameType | None) -> None:
    # SIGTERM/SIGHUP unwind like Ctrl-C, so the container's `with` block cleans up.
    raise KeyboardInterrupt


def _images(
    arguments: list[str], recipes_dir: Path | None, scratch: Path, tree: Path
) -> list[Path]:
    """Image paths as given; anything else is a recipe, built for this machine first
    (recipes of Debian packages against the tree that boots, as their base)."""
    from sysext.build.pipeline import BuildRequest, build
    from sysext.core.config import load_settings
    from sysext.recipe.model import find_recipe, load_recipe

    images = []
    for argument in arguments:
        path = Path(argument)
        if path.suffix == ".raw" or path.is_file():
            if not path.is_file():
                raise SysextError(f"{path}: no such image", "give an image file or a recipe name")
            images.append(path)
            continue
        recipe = load_recipe(find_recipe(argument, recipes_dir))
        base = str(tree) if recipe.package_source is not None else None
        request = BuildRequest(
            recipe=recipe, output_dir=scratch, settings=load_settings(), base=base
        )
        built = build(request)
        images += [image.path for image in built]
    return images


def try_command(
    extensions: list[str] = typer.Argument(
        ..., metavar="IMAGE|RECIPE...", help="Extension images (.raw) or recipes to build first."
    ),
    root: Path | None = typer.Option(
        None,
        "--root",
        help="OS tree to boot (a directory with /usr and systemd); default: a cached minimal "
        "Debian root, built on first use (about a minute).",
    ),
    base: str = typer.Option(
        "debian-12",
        "--base",
        help="Which cached root without --root: debian-12 (systemd 254, bookworm-backports), "
        "debian-13 (systemd 257) or debian-forky (systemd 262).",
    ),
    os_name: str = typer.Option(
        "debian",
        "--os",
        help="os-release the container shows to systemd-sysext: flatcar, fcos, or debian "
        "(the root's own). Extensions built with --os flatcar merge only with --os flatcar.",
    ),
    run_command: str | None = typer.Option(
        None, "--run", help="Run this shell command inside after boot; exit with its code."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    recipes_dir: Path | None = typer.Option(
        None, "--recipes-dir", help="Directory of recipes (default: the shipped ones)."
    ),
) -> None:
    """Boot a throw-away container with the extensions in /etc/extensions and report, per
    extension, whether systemd-sysext merged it (and why not), each of its units and their
    state, failed units and their journal.

    Then runs --run CMD inside and exits with its code, or opens a shell inside when the
    terminal is interactive. Everything (container, overlay, loop devices, temporary files)
    is removed on exit and on Ctrl-C. Needs root and systemd-nspawn (systemd-container).

    Example: sysext try out/podman-5.3.1-x86-64.raw --run 'podman --version'

    Example: sysext try containerd --os flatcar

    Example (a recipe of Debian packages is built against the root that boots):
    sysext try git --base debian-13 --run 'git --version'
    """
    from sysext.boot.container import Container
    from sysext.boot.report import render
    from sysext.boot.rootfs import Base, ensure_root
    from sysext.boot.trial import GuestOS, identify, inspect, root_os_release, stage

    try:
        guest = GuestOS(os_name)
    except ValueError:
        raise SysextError(f"--os {os_name}: unknown", "use flatcar, fcos or debian") from None
    try:
        chosen_base = Base(base)
    except ValueError:
        raise SysextError(
            f"--base {base}: unknown", "use debian-12, debian-13 or debian-forky"
        ) from None
    if root is not None and not (root / "usr").is_dir():
        raise SysextError(f"--root {root}: not an OS tree (no usr/)", "pass the root of an OS tree")
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _terminate)
    with tempfile.TemporaryDirectory(prefix="sysext-try-build.") as scratch:
        tree = root if root is not None else ensure_root(chosen_base)
        images = _images(extensions, recipes_dir, Path(scratch), tree)
        found = [identify(image) for image in images]
        os_release = root_os_release(tree, guest)
        with Container(tree) as box:
            stage(box, found, guest)
            console.print(f"Booting {tree} with {', '.join(e.name for e in found)}…")
            box.boot()
            report = inspect(box, found, os_release)
            if as_json:
                print(json.dumps(_as_dict(report), indent=2))
            else:
                print(render(report))
            sys.stdout.flush()
            if run_command is not None:
                # On this terminal, not captured: output streams, and a daemon the command
                # leaves running inside cannot hold a pipe open.
                code = box.shell(["/bin/sh", "-c", run_command])
            elif sys.stdin.isatty() and sys.stdout.isatty():
                console.print("Shell inside the container; exit it to stop the container.")
                code = box.shell()
            else:
                code = 0 if report.ok else 1
            console.print("Stopping the container…")
    raise typer.Exit(code)


def _as_dict(report: object) -> object:
    from dataclasses import asdict, is_dataclass

    def convert(value: object) -> object:
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [convert(v) for v in value]
        return value

    assert is_dataclass(report) and not isinstance(report, type)
    return convert(asdict(report))


def register(app: typer.Typer) -> None:
    app.command("try")(try_command)
