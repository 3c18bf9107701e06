"""`sysext build` and `sysext versions`: images from recipes, and what upstream offers."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from sysext.cli.image_cmds import (
    SIGNING_CERT_HELP,
    SIGNING_KEY_HELP,
    VERITY_HELP,
    verity_signer,
)
from sysext.core.errors import SysextError
from sysext.core.steps import console
from sysext.core.urls import DEFAULT_CHANNEL
from sysext.image.formats import Compression, ImageFormat
from sysext.systemd.architecture import Architecture

if TYPE_CHECKING:
    from sysext.recipe.model import Recipe

DEFAULT_OUTPUT = Path("out")


def build_command(
    recipes: list[str] = typer.Argument(
        None,
        metavar="RECIPE...",
        help="Recipe names (looked up in recipes/ or --recipes-dir) or paths to .toml files.",
        show_default=False,
    ),
    all_recipes: bool = typer.Option(
        False, "--all", help="Build every recipe in --recipes-dir (or the shipped ones)."
    ),
    version: list[str] = typer.Option(
        [],
        "--version",
        help="Upstream version to build (default: the recipe's `version`); with several "
        "recipes or versions also `latest` or a track X.Y (its newest X.Y.*); repeatable.",
        show_default=False,
    ),
    arch: list[str] = typer.Option(
        [],
        "--arch",
        "-a",
        metavar="ARCH",
        help="Architecture in systemd's names (x86-64, arm64); repeat for several "
        "(default: this machine's).",
    ),
    os_spec: str | None = typer.Option(
        None,
        "--os",
        help="Host OS the image is for, ID[:SYSEXT_LEVEL] (e.g. flatcar:1.0); default: the "
        "recipe's `os`, else _any (every OS).",
    ),
    os_version_id: str | None = typer.Option(
        None,
        "--os-version-id",
        help="Bind the images to hosts with this os-release VERSION_ID (needs an OS ID "
        "without a level); names them NAME-VERSION-VERSIONID-ARCH.raw, e.g. --os flatcar "
        "--os-version-id 3815.2.0.",
    ),
    image_format: ImageFormat = typer.Option(
        ImageFormat.SQUASHFS, "--format", help="Image file system."
    ),
    compression: Compression | None = typer.Option(
        None,
        "--compression",
        help="Compressor (default: zstd level 16 for squashfs, lz4hc for erofs; xz packs "
        "smaller but reads ~3x slower).",
    ),
    level: int | None = typer.Option(
        None,
        "--level",
        help="Compression level: zstd 1-22 (default 16), gzip 1-9 (default 9), lz4hc on "
        "erofs 0-12 (default 9); xz and lz4 take none.",
    ),
    block_size: int | None = typer.Option(
        None,
        "--block-size",
        help="squashfs block size in bytes, a power of two from 4096 to 1048576 (default: "
        "1048576); smaller blocks pack larger and read big files no faster.",
    ),
    output: Path = typer.Option(
        DEFAULT_OUTPUT, "--output", "-o", help="Directory for images, SHA256SUMS, provenance."
    ),
    sign_key: Path | None = typer.Option(
        None,
        "--sign-key",
        help="OpenPGP key (sysext key generate) to sign OUTPUT/SHA256SUMS with "
        "(passphrase from SYSEXT_KEY_PASSPHRASE).",
    ),
    cache_dir: Path | None = typer.Option(
        None,
        "--cache-dir",
        help="Download cache (default: $SYSEXT_CACHE_DIR, config file, ~/.cache/sysext).",
    ),
    recipes_dir: Path | None = typer.Option(
        None,
        "--recipes-dir",
        help="Where recipe names are looked up (default: $SYSEXT_RECIPES_DIR, else shipped).",
    ),
    refresh: bool = typer.Option(
        False, "--refresh", help="Ignore cached downloads and fetch everything again."
    ),
    force: bool = typer.Option(
        False, "--force", help="Pack again even when an image of the same inputs is in OUTPUT."
    ),
    publish: str | None = typer.Option(
        None,
        "--publish",
        metavar="URL",
        help="Upload to this registry what it does not have yet (token from $SYSEXT_TOKEN); "
        "versions the channel has are not built again (--force: build and compare). Builds "
        "the matrix way even for one recipe.",
    ),
    channel: str = typer.Option(
        DEFAULT_CHANNEL, "--channel", "-c", help="Channel to publish in (with --publish)."
    ),
    jobs: int = typer.Option(
        4, "--jobs", "-j", min=1, help="Images in progress at once in a matrix build."
    ),
    locked: bool = typer.Option(
        False,
        "--locked",
        help="Use only files recorded by `sysext lock` (each recipe's ./RECIPE.lock.json, "
        "or --lock-file for one recipe); a changed upstream file is an error. In a matrix "
        "build a recipe without its lock fails only its own rows.",
    ),
    verity: bool = typer.Option(False, "--verity", help=VERITY_HELP),
    signing_cert: Path | None = typer.Option(None, "--signing-cert", help=SIGNING_CERT_HELP),
    signing_key: Path | None = typer.Option(None, "--signing-key", help=SIGNING_KEY_HELP),
    lock_file: Path | None = typer.Option(
        None,
        "--lock-file",
        help="Lock file for --locked with one recipe (default: ./RECIPE.lock.json).",
    ),
    base: str | None = typer.Option(
        None,
        "--base",
        metavar="DIR|ID:VERSION_ID",
        help="For recipes with an apt source: the base OS tree (its dpkg database says what "
        "is installed; its os-release binds the image), or a release such as debian:13 "
        "(its minimal install); default: the recipe's [base].",
    ),
) -> None:
    """Build extension images from recipes: fetch, verify, extract, stage, pack.

    Writes OUTPUT/NAME-VERSION-ARCH.raw, merges OUTPUT/SHA256SUMS and writes
    OUTPUT/NAME-VERSION-ARCH.provenance.json. For one recipe, nothing is written unless
    every requested architecture fetched, verified and staged cleanly.

    Incremental: an image whose inputs (recipe file, source hashes, options, tool version,
    SOURCE_DATE_EPOCH) match the provenance file of the image in OUTPUT is not rebuilt
    ("unchanged"); --force packs it again.

    Several recipes, --all, several --version or --publish build every combination in
    parallel (downloads overlap, packing is bounded by the cores) and end with a summary
    table (built / unchanged / published / already published / failed and why); a failed
    row leaves nothing behind and the exit status is 1.

    With --locked, each recipe of a matrix build uses its own ./RECIPE.lock.json;
    a missing lock, or a file not matching it, fails only that recipe's rows.

    Images are reproducible: file times come from SOURCE_DATE_EPOCH (default 0).

    Upstream URLs are redirected to mirrors by SYSEXT_MIRRORS (e.g.
    'https://github.com/=https://mirror.example/gh/') or by the mirrors table of
    ~/.config/sysext/config.toml (see recipes/README.md).

    Example: sysext build shellcheck --output out/

    Example (smallest image, ~0.72× a gzip image's size instead of ~0.82×, but cold reads
    take ~3× as long; see docs/catalogue.md): sysext build docker --compression xz

    Example (only files recorded by `sysext lock docker`): sysext build docker --locked

    Example (Debian packages minus what a Debian 13 root has, bound to it):
    sysext build git --base /srv/images/trixie-root

    Example (only for Flatcar 3815.2.0 hosts, see `sysext transfer --os-bound`):
    sysext build shellcheck --os flatcar --os-version-id 3815.2.0 --output out/

    Example (each recipe from its own lock, written first by
    `sysext lock k3s --arch x86-64 --arch arm64`, the same for tailscale):
    sysext build k3s tailscale --arch x86-64 --arch arm64 --locked

    Example (the catalogue for two architectures, published to a registry):
    SYSEXT_TOKEN=… sysext build --all --arch x86-64 --arch arm64 --output out/
    --publish https://ext.example.com

    Example (signed dm-verity DDIs, see docs/verity.md):
    sysext build shellcheck --verity --signing-cert verity.crt --signing-key verity.key
    """
    from rich.table import Table

    from sysext.build.pipeline import BuildRequest, build
    from sysext.core.config import load_settings
    from sysext.core.download import Downloader
    from sysext.recipe.model import (
        available_recipes,
        bundled_recipes_dir,
        find_recipe,
        load_recipe,
    )

    recipes = recipes or []
    if all_recipes and recipes:
        raise SysextError("pass recipe names or --all, not both", "drop the names or --all")
    if not all_recipes and not recipes:
        raise SysextError("no recipe given", "name one or more recipes, or pass --all")
    from sysext.build.pack import check_block_size

    check_block_size(image_format, block_size)  # before any download
    signer = verity_signer(verity, signing_cert, signing_key)  # a bad key fails first too
    settings = load_settings(cache_dir=cache_dir)
    arches = tuple(Architecture.parse(a) for a in arch)
    passphrase = os.environ.get("SYSEXT_KEY_PASSPHRASE") or None
    if sign_key is not None:
        from sysext.trust.signing import load_key

        load_key(sign_key, passphrase=passphrase)  # a bad key fails before any download
    matrix = all_recipes or len(recipes) > 1 or len(version) > 1 or publish is not None
    if matrix:
        from sysext.build.matrix import MatrixRequest
        from sysext.cli.matrix_cmd import run_matrix_command

        directory = recipes_dir or bundled_recipes_dir()
        names = available_recipes(directory) if all_recipes else recipes
        if not names:
            raise SysextError(f"no recipes in {directory}", "pass --recipes-dir DIR")
        loaded_all: dict[str, Recipe] = {}
        for name in names:
            one = load_recipe(find_recipe(name, recipes_dir))
            loaded_all.setdefault(one.name, one)
        if lock_file is not None and len(loaded_all) > 1:
            raise SysextError(
                "--lock-file names one recipe's lock, and this build has several recipes",
                "drop --lock-file: with --locked each recipe uses its own ./RECIPE.lock.json",
            )
        request = MatrixRequest(
            recipes=tuple(loaded_all.values()),
            output_dir=output,
            settings=settings,
            versions=tuple(version),
            architectures=arches,
            os_spec=os_spec,
            os_version_id=os_version_id,
            image_format=image_format,
            compression=compression,
            level=level,
            block_size=block_size,
            refresh=refresh,
            force=force,
            workers=jobs,
            locked=locked,
            lock_file=lock_file if locked else None,
            base=base,
            verity_signer=signer,
        )
        failed = run_matrix_command(request, publish, channel)
        if sign_key is not None:
            from sysext.trust.signing import sign_directory

            sign_directory(output, sign_key, passphrase=passphrase)
        if failed:
            raise typer.Exit(1)
        return
    from sysext.build.lockfile import default_lock_path, load_lock
    from sysext.build.upstream_versions import resolve_version

    loaded = load_recipe(find_recipe(recipes[0], recipes_dir))
    lock = load_lock(lock_file or default_lock_path(loaded.name), loaded.name) if locked else None
    downloader = Downloader(settings.cache_dir, settings.mirrors)
    chosen = resolve_version(loaded, version[0] if version else None, downloader)
    images = build(
        BuildRequest(
            recipe=loaded,
            output_dir=output,
            settings=settings,
            version=chosen,
            architectures=arches,
            os_spec=os_spec,
            os_version_id=os_version_id,
            image_format=image_format,
            compression=compression,
            level=level,
            block_size=block_size,
            refresh=refresh,
            force=force,
            lock=lock,
            base=base,
            verity_signer=signer,
        )
    )
    for image in images:
        if image.unchanged:
            console.print(
                f"unchanged: {image.path.name} (same inputs as the image in {output}; "
                "--force packs it again)",
                markup=False,
            )
    if sign_key is not None:
        from sysext.trust.signing import sign_directory

        sign_directory(output, sign_key, passphrase=passphrase)
    table = Table(title=f"{loaded.name}: {len(images)} image(s) in {output}")
    # Version and architecture are part of the file name (NAME-VERSION-ARCH.raw).
    for column in ("image", "size"):
        table.add_column(column, no_wrap=True)
    # The full digests are in OUT/SHA256SUMS; a prefix keeps the table within 80 columns.
    table.add_column("sha256 (prefix)", no_wrap=True)
    for image in images:
        table.add_row(
            image.path.name,
            _size(image.size),
            image.sha256[:16],
        )
    console.print(table)
    for image in images:
        print(image.path)


def versions_command(
    recipe: str = typer.Argument(
        ..., metavar="RECIPE", help="Recipe name or path to a .toml file."
    ),
    recipes_dir: Path | None = typer.Option(
        None,
        "--recipes-dir",
        help="Where recipe names are looked up (default: $SYSEXT_RECIPES_DIR, else shipped).",
    ),
    limit: int = typer.Option(20, "--limit", "-n", help="Show at most this many (0: all)."),
    base: str | None = typer.Option(
        None,
        "--base",
        metavar="DIR|ID:VERSION_ID",
        help="Recipes with an apt source: the base whose suites are listed (default: [base]).",
    ),
    arch: str | None = typer.Option(
        None, "--arch", "-a", help="Recipes with an apt source: architecture (default: this one)."
    ),
) -> None:
    """List the upstream versions of a recipe, newest first.

    Versions are ordered the way systemd-sysupdate orders them. The feed is the
    recipe's versions table: GitHub releases (mirrors apply, see `sysext build
    --help`) or `pip index versions`. The recipe's default version is marked '*'.

    For a recipe with an apt source: each package's versions in the base's suite and
    its -updates and -security suites (verified as in a build), newest first; '*' marks
    the candidate a build takes.

    Example: sysext versions shellcheck

    Example: sysext versions git --base debian:13
    """
    from sysext.build.upstream_versions import upstream_versions
    from sysext.core.config import load_settings
    from sysext.core.download import Downloader
    from sysext.recipe.model import find_recipe, load_recipe

    settings = load_settings()
    loaded = load_recipe(find_recipe(recipe, recipes_dir))
    downloader = Downloader(settings.cache_dir, settings.mirrors)
    if loaded.package_source is not None:
        from sysext.build.sources.apt import archive_versions

        chosen = Architecture.parse(arch) if arch else Architecture.from_uname()
        for name, pairs in archive_versions(
            loaded, downloader, arch=chosen.debian_name, base_arg=base
        ):
            for number, (package_version, suite) in enumerate(pairs[: limit or None]):
                marker = " *" if number == 0 else ""
                print(f"{name} {package_version} {suite}{marker}")
            if not pairs:
                raise SysextError(f"{name}: not in the archive of {loaded.name}'s base")
        return
    found = upstream_versions(loaded, downloader)
    if not found:
        raise SysextError(f"no upstream versions found for {loaded.name}")
    for version in found[: limit or None]:
        marker = " *" if version == loaded.version else ""
        print(f"{version}{marker}")


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.1f} {unit}" if unit != "B" else f"{size} B"
        value /= 1024
    return f"{size} B"


def register(app: typer.Typer) -> None:
    """Add `build` and `versions` to the main app."""
    app.command("build")(build_command)
    app.command("versions")(versions_command)
