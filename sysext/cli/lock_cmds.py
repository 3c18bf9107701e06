"""`sysext lock`: record every file a recipe resolves to (URL, sha256, size)."""

from __future__ import annotations

from pathlib import Path

import typer

from sysext.systemd.architecture import Architecture


def lock_command(
    recipe: str = typer.Argument(
        ..., metavar="RECIPE", help="Recipe name or path to a .toml file."
    ),
    version: list[str] = typer.Option(
        [],
        "--version",
        help="Upstream version, `latest` or a track such as 1.31; repeat for several "
        "(default: the recipe's `version`).",
    ),
    arch: list[str] = typer.Option(
        [], "--arch", "-a", metavar="ARCH", help="Architecture (x86-64, arm64); repeat for several."
    ),
    lock_file: Path | None = typer.Option(
        None, "--lock-file", help="Lock file to write or extend (default: ./RECIPE.lock.json)."
    ),
    cache_dir: Path | None = typer.Option(None, "--cache-dir", help="Download cache."),
    recipes_dir: Path | None = typer.Option(
        None, "--recipes-dir", help="Where recipe names are looked up."
    ),
    base: str | None = typer.Option(
        None,
        "--base",
        metavar="DIR|ID:VERSION_ID",
        help="Recipes with an apt source: the base to resolve against (see sysext build).",
    ),
) -> None:
    """Fetch and verify every source of a recipe and record URL, sha256 and size.

    Files upstream signs or checksums are verified as in a build; files upstream
    vouches for in no way (recipes with integrity = "lock", e.g. Docker's static
    tarballs) are recorded on first use, and only `sysext build --locked` may use
    them afterwards. Existing entries for other versions or architectures are kept.

    Example: sysext lock docker --version 28.5.2 --arch x86-64 --arch arm64

    Then: sysext build docker --version 28.5.2 --arch x86-64 --locked

    A recipe with an apt source records every .deb of its closure (package, version,
    archive URL, sha256) under the image version it makes; `--locked` rebuilds that
    image byte for byte from them without reading the archive's indices again.

    Example: sysext lock htop --base /srv/images/bookworm-root
    """
    from sysext.build.lockfile import default_lock_path, empty_lock, load_lock, write_lock
    from sysext.build.pipeline import lock_entries
    from sysext.build.upstream_versions import resolve_version
    from sysext.core.config import load_settings
    from sysext.core.download import Downloader
    from sysext.recipe.model import find_recipe, load_recipe

    settings = load_settings(cache_dir=cache_dir)
    loaded = load_recipe(find_recipe(recipe, recipes_dir))
    path = lock_file or default_lock_path(loaded.name)
    lock = load_lock(path, loaded.name) if path.exists() else empty_lock(path, loaded.name)
    arches = tuple(Architecture.parse(a) for a in arch)
    downloader = Downloader(settings.cache_dir, settings.mirrors)
    requests: list[str | None] = list(version) or [None]
    for requested in requests:
        chosen = resolve_version(loaded, requested, downloader)
        new = lock_entries(loaded, chosen, arches, settings, base=base)
        lock = lock.merged(new)
        for entry in new:
            print(entry.version, entry.arch, entry.source, entry.sha256, entry.size, entry.url)
    write_lock(lock)
    print(path)


def register(app: typer.Typer) -> None:
    app.command("lock")(lock_command)
