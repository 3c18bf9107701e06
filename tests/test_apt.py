"""The `apt` source kind against a Debian-shaped archive served on 127.0.0.1.

The archive (tests/apt_fixtures.py) holds real .deb files built by dpkg-deb and InRelease
files signed by a test key; builds run the `sysext` CLI as a user would, with mirror rules
for `apt://debian/` and `apt://debian-security/` pointing at the test server and the
recipe's [base] keyring naming the test key. The real archive is exercised by
tests/test_apt_archive.py.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from sysext.image.read import read_file, read_image
from tests.apt_fixtures import Archive, Deb, make_root
from tests.servers import CliResult, StaticServer, run_cli, serve_directory
from tests.upstream_fixtures import SigningKey

pytestmark = pytest.mark.slow

LIBC = Deb(
    "libc6",
    "2.36-9",
    priority="required",
    files={"lib/x86_64-linux-gnu/libc.so.6": b"libc", "usr/share/doc/libc6/copyright": b"c"},
)
PERL_BASE = Deb("perl-base", "5.36.0-7+deb12u3", priority="required", files={"usr/bin/perl": b"p"})
BASE_PACKAGES = [LIBC, PERL_BASE]

TOOL = Deb(
    "tool",
    "1:1.0-1",
    depends="libc6 (>= 2.30), libtool1 (>= 1.0), mailer | default-mailer",
    files={
        "usr/bin/tool": b"#!/bin/sh\necho tool 1.0\n",
        "etc/tool/tool.conf": b"setting = 1\n",
        "var/lib/tool/.keep": b"",
    },
    links={"etc/tool/current": "tool.conf"},
)
LIBTOOL = Deb("libtool1", "1.0-1", files={"lib/x86_64-linux-gnu/libtool.so.1": b"v1.0-1"})
LIBTOOL_FIX = Deb(
    "libtool1", "1.0-1+deb12u1", files={"lib/x86_64-linux-gnu/libtool.so.1": b"v-fix"}
)
MTA = Deb("mta-a", "2.0", provides="mailer", files={"usr/sbin/mta-a": b"#!/bin/sh\n"})
NEWER_LIBC = Deb(
    "libc6", "2.38-1", priority="required", files={"lib/x86_64-linux-gnu/libc.so.6": b"new"}
)
# perl in the suite fits the base's perl-base; the security pocket's needs a newer one.
PERL = Deb(
    "perl",
    "5.36.0-7+deb12u3",
    depends="perl-base (= 5.36.0-7+deb12u3)",
    files={"usr/bin/perl5.36": b"x"},
)
PERL_NEW = Deb(
    "perl",
    "5.36.0-7+deb12u4",
    depends="perl-base (= 5.36.0-7+deb12u4)",
    files={"usr/bin/perl5.36": b"y"},
)
SCRIPTED = Deb(
    "scripted",
    "1.0",
    files={"usr/bin/scripted": b"#!/bin/sh\n"},
    scripts={
        "postinst": '#!/bin/sh\nset -e\nif [ "$1" = configure ]; then\n'
        "  adduser --system --quiet scripted\nfi\n",
        "preinst": '#!/bin/sh\nset -e\nif [ "$1" = upgrade ]; then rm -rf /var/lib/old; fi\n',
    },
)
CLOBBER = Deb("clobber", "1.0", files={"usr/bin/perl": b"not perl"})


def recipe_text(name: str, packages: list[str], keyring: Path, extra: str = "") -> str:
    return (
        f'name = "{name}"\narchitectures = ["x86-64"]\n{extra}\n'
        f'[base]\nid = "debian"\nversion_id = "12"\nkeyring = "{keyring}"\n\n'
        f'[[sources]]\nkind = "apt"\npackages = {json.dumps(packages)}\n'
    )


@dataclass
class World:
    archive: Archive
    server: StaticServer
    base: Path
    recipes: Path
    tmp: Path

    def env(self, **more: str) -> dict[str, str]:
        return {
            "SYSEXT_MIRRORS": self.archive.mirrors(self.server.url),
            "SYSEXT_CACHE_DIR": str(self.tmp / "cache"),
            "SYSEXT_CONFIG": str(self.tmp / "no-config.toml"),
            **more,
        }

    def recipe(self, name: str, packages: list[str], extra: str = "", source: str = "") -> Path:
        path = self.recipes / f"{name}.toml"
        path.write_text(recipe_text(name, packages, self.archive.keyring(), extra) + source)
        return path

    def sysext(self, *args: str | Path, **env: str) -> CliResult:
        return run_cli(*args, env=self.env(**env), cwd=self.tmp)

    def build(self, recipe: Path, out: Path, *args: str | Path) -> CliResult:
        return self.sysext("build", recipe, "--base", self.base, "-o", out, *args)


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    archive = Archive(tmp_path / "www")
    archive.add("bookworm", TOOL, LIBTOOL, MTA, NEWER_LIBC, PERL, SCRIPTED, CLOBBER)
    archive.add("bookworm-security", PERL_NEW)
    archive.publish()
    base = make_root(tmp_path / "base", BASE_PACKAGES)
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    with serve_directory(archive.root) as server:
        yield World(archive, server, base, recipes, tmp_path)


def one_image(out: Path) -> Path:
    (image,) = sorted(out.glob("*.raw"))
    return image


def files_of(image: Path) -> set[str]:
    return {e.path for e in read_image(image).entries if e.kind != "dir"}


def release_of(image: Path, name: str) -> dict[str, str]:
    return dict(read_image(image).release_files[name])


def assert_one_line_error(result: CliResult, *fragments: str) -> None:
    assert result.returncode != 0, result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    for fragment in fragments:
        assert fragment in errors[0], result.stderr


# -- a build against a base root ---------------------------------------------------------------


def test_build_adds_only_what_the_base_lacks_and_is_bound_to_it(world: World) -> None:
    recipe = world.recipe("tool", ["tool"])
    out = world.tmp / "out"
    result = world.build(recipe, out)
    assert result.returncode == 0, result.stderr
    image = one_image(out)
    # libc6 and perl-base are the base's; the newer libc6 of the archive is not taken.
    release = release_of(image, "tool")
    assert release["X_SYSEXT_PACKAGES"] == "libtool1=1.0-1 mta-a=2.0 tool=1:1.0-1"
    assert (release["ID"], release["VERSION_ID"]) == ("debian", "12")
    assert release["X_SYSEXT_UPSTREAM_VERSION"] == "1:1.0-1"
    # The version: the first package's without its epoch, + the other packages' digest.
    assert release["SYSEXT_VERSION_ID"].startswith("1.0_1+c")
    assert image.name == f"tool-{release['SYSEXT_VERSION_ID']}-12-x86-64.raw"
    files = files_of(image)
    assert {
        "usr/bin/tool",
        "usr/lib/x86_64-linux-gnu/libtool.so.1",  # lib/ of the package, under usr/
        "usr/sbin/mta-a",
        "usr/share/factory/etc/tool/tool.conf",
        "usr/share/factory/etc/tool/current",
        "usr/share/factory/var/lib/tool/.keep",
        "usr/lib/tmpfiles.d/sysext-tool.conf",
    } <= files
    assert not any(path.startswith(("etc/", "var/", "lib/")) for path in files)
    base_files = {
        line.strip("/")
        for path in (world.base / "var/lib/dpkg/info").glob("*.list")
        for line in path.read_text().splitlines()
    }
    assert not any(f.replace("usr/lib/", "lib/") in base_files or f in base_files for f in files)
    tmpfiles = read_file(image, "usr/lib/tmpfiles.d/sysext-tool.conf").decode()
    assert "C /etc/tool/tool.conf - - - - /usr/share/factory/etc/tool/tool.conf" in tmpfiles
    assert "L /etc/tool/current - - - - tool.conf" in tmpfiles
    assert "C /var/lib/tool/.keep - - - - /usr/share/factory/var/lib/tool/.keep" in tmpfiles
    validated = world.sysext("validate", image, "--os-release", world.base / "etc/os-release")
    assert validated.returncode == 0, validated.stdout + validated.stderr
    provenance = json.loads(next(out.glob("*.provenance.json")).read_text())
    (source,) = provenance["inputs"]["sources"]
    assert source["integrity"] == f"apt-archive:{world.archive.key.fingerprint}"
    assert sorted(p["package"] for p in source["parts"]) == [
        "libtool1=1.0-1",
        "mta-a=2.0",
        "tool=1:1.0-1",
    ]
    assert all(p["url"].startswith("apt://debian/pool/") for p in source["parts"])


def test_an_older_version_that_fits_the_base_is_taken(world: World) -> None:
    """The security pocket's perl needs a newer perl-base than the base has: the suite's
    perl, whose perl-base matches, is what apt-get on that base would install."""
    out = world.tmp / "out"
    result = world.build(world.recipe("perl", ["perl"]), out)
    assert result.returncode == 0, result.stderr
    assert release_of(one_image(out), "perl")["X_SYSEXT_PACKAGES"] == "perl=5.36.0-7+deb12u3"
    pinned = world.build(
        world.recipe("perl", ["perl"]), world.tmp / "out2", "--version", "5.36.0-7+deb12u4"
    )
    assert_one_line_error(
        pinned,
        "perl 5.36.0-7+deb12u4 needs perl-base (= 5.36.0-7+deb12u4)",
        "a base package is never replaced",
    )
    assert not (world.tmp / "out2").exists()


def test_a_package_overwriting_a_base_file_is_refused(world: World) -> None:
    out = world.tmp / "out"
    result = world.build(world.recipe("clobber", ["clobber"]), out)
    assert_one_line_error(result, "clobber would overwrite /usr/bin/perl of base package perl-base")
    assert not out.exists()


def test_a_package_the_base_has_is_refused(world: World) -> None:
    result = world.build(world.recipe("libc", ["libc6"]), world.tmp / "out")
    assert_one_line_error(result, "libc6 is installed in base", "never replaces a base package")


def test_maintainer_scripts_are_refused_unless_the_recipe_skips_them(world: World) -> None:
    out = world.tmp / "out"
    refused = world.build(world.recipe("scripted", ["scripted"]), out)
    assert_one_line_error(
        refused,
        "scripted 1.0: postinst runs adduser (creates a user or group)",
        "sysext never runs maintainer scripts",
    )
    assert "preinst" not in refused.stderr  # its only action is on upgrades
    assert not out.exists()
    allowed = world.recipe("scripted", ["scripted"], source='skip_scripts = ["scripted"]\n')
    result = world.build(allowed, out)
    assert result.returncode == 0, result.stderr


# -- the trust chain -------------------------------------------------------------------------


def test_tampered_packages_index_is_refused(world: World) -> None:
    index = world.archive.root / "debian/dists/bookworm/main/binary-amd64"
    for path in [index / "Packages.xz", *(index / "by-hash/SHA256").iterdir()]:
        if path.read_bytes()[:6] == b"\xfd7zXZ\x00":
            import lzma

            text = lzma.decompress(path.read_bytes()).replace(b"libtool1", b"libtoolX")
            path.write_bytes(lzma.compress(text))
    out = world.tmp / "out"
    result = world.build(world.recipe("tool", ["tool"]), out)
    assert_one_line_error(
        result, "bookworm/main/binary-amd64/Packages.xz: sha256 mismatch against InRelease"
    )
    assert not out.exists()
    assert not list((world.tmp / "cache/downloads/sha256").glob("*")) or all(
        hashlib.sha256(p.read_bytes()).hexdigest() == p.name
        for p in (world.tmp / "cache/downloads/sha256").iterdir()
    )


def test_tampered_deb_is_refused(world: World) -> None:
    deb = world.archive.deb_path(LIBTOOL)
    data = bytearray(deb.read_bytes())
    data[-10] ^= 0xFF
    deb.write_bytes(bytes(data))
    out = world.tmp / "out"
    result = world.build(world.recipe("tool", ["tool"]), out)
    assert_one_line_error(
        result, f"{LIBTOOL.file_name}: sha256 mismatch against the Packages index"
    )
    assert not out.exists()


def test_inrelease_signed_by_an_unknown_key_is_refused(world: World) -> None:
    world.archive.sign_release("bookworm", sign_with=SigningKey())
    out = world.tmp / "out"
    result = world.build(world.recipe("tool", ["tool"]), out)
    assert_one_line_error(
        result, "apt://debian/dists/bookworm/InRelease: not signed by a key of", "refusing it"
    )
    assert not out.exists()


def test_inrelease_of_another_suite_or_expired_is_refused(world: World) -> None:
    world.archive.sign_release("bookworm-updates", codename="bullseye-updates")
    result = world.build(world.recipe("tool", ["tool"]), world.tmp / "out")
    assert_one_line_error(result, "signed for suite 'bullseye-updates', not 'bookworm-updates'")
    world.archive.sign_release("bookworm-updates")
    world.archive.valid_until["bookworm-security"] = 1_000_000_000.0
    world.archive.sign_release("bookworm-security")
    result = world.build(world.recipe("tool", ["tool"]), world.tmp / "out")
    assert_one_line_error(result, "bookworm-security/InRelease: expired on", "Valid-Until")
    assert not (world.tmp / "out").exists()


def test_pinned_signing_keys_must_sign(world: World) -> None:
    def pinned(fingerprint: str) -> Path:
        recipe = world.recipe("tool", ["tool"])
        text = recipe.read_text().replace(
            "[[sources]]", f'signing_keys = ["{fingerprint}"]\n\n[[sources]]'
        )
        recipe.write_text(text)
        return recipe

    other = SigningKey()
    result = world.build(pinned(other.fingerprint), world.tmp / "out")
    assert_one_line_error(result, "holds none of the pinned keys", other.fingerprint)
    # A key of the keyring that is not pinned cannot vouch for the archive.
    recipe = pinned(other.fingerprint)  # (writes the archive's keyring)
    world.archive.keyring().write_bytes(bytes(world.archive.key.cert) + bytes(other.cert))
    result = world.build(recipe, world.tmp / "out")
    assert_one_line_error(result, "bookworm/InRelease: not signed by a key of", "refusing it")
    assert not (world.tmp / "out").exists()
    result = world.build(pinned(world.archive.key.fingerprint), world.tmp / "out")
    assert result.returncode == 0, result.stderr


# -- locks, versions, rebuilds ---------------------------------------------------------------


def test_lock_then_locked_rebuilds_byte_identically_after_the_archive_moved_on(
    world: World,
) -> None:
    recipe = world.recipe("tool", ["tool"])
    lock_file = world.tmp / "tool.lock.json"
    locked = world.sysext("lock", recipe, "--base", world.base, "--lock-file", lock_file)
    assert locked.returncode == 0, locked.stderr
    entries = json.loads(lock_file.read_text())["entries"]
    assert sorted(e["package"] for e in entries) == ["libtool1=1.0-1", "mta-a=2.0", "tool=1:1.0-1"]
    assert {e["source"] for e in entries} == {"tool/tool", "tool/libtool1", "tool/mta-a"}
    first = world.build(recipe, world.tmp / "a")
    assert first.returncode == 0, first.stderr
    # A security update of a dependency: an unlocked build takes it, under a new version.
    world.archive.add("bookworm-security", LIBTOOL_FIX)
    world.archive.publish()
    moved = world.build(recipe, world.tmp / "b")
    assert moved.returncode == 0, moved.stderr
    assert one_image(world.tmp / "b").name != one_image(world.tmp / "a").name
    assert (
        "libtool1=1.0-1+deb12u1"
        in release_of(one_image(world.tmp / "b"), "tool")["X_SYSEXT_PACKAGES"]
    )
    # --locked: the recorded closure, byte for byte, without reading the archive's indices.
    for suite in world.archive.suite_names:
        (world.archive.archive_of(suite) / "dists" / suite / "InRelease").unlink()
    again = world.build(recipe, world.tmp / "c", "--locked", "--lock-file", lock_file)
    assert again.returncode == 0, again.stderr
    a, c = one_image(world.tmp / "a"), one_image(world.tmp / "c")
    assert a.name == c.name
    assert a.read_bytes() == c.read_bytes()


def _outcomes(result: CliResult) -> dict[str, str]:
    """Recipe → outcome from the matrix summary table (stderr)."""
    found = {}
    for line in result.stderr.splitlines():
        cells = [c.strip() for c in line.strip("│┃ ").split("│")]
        if len(cells) > 3 and cells[0] in ("tool", "mta"):
            found[cells[0]] = next(c for c in cells if c in ("built", "unchanged", "failed"))
    return found


def test_matrix_rebuilds_only_when_the_closure_changed(world: World) -> None:
    tool = world.recipe("tool", ["tool"])
    mta = world.recipe("mta", ["mta-a"])
    out = world.tmp / "out"
    result = world.sysext("build", tool, mta, "--base", world.base, "-o", out)
    assert result.returncode == 0, result.stderr
    assert _outcomes(result) == {"tool": "built", "mta": "built"}, result.stderr
    again = world.sysext("build", tool, mta, "--base", world.base, "-o", out)
    assert again.returncode == 0, again.stderr
    assert _outcomes(again) == {"tool": "unchanged", "mta": "unchanged"}, again.stderr
    world.archive.add("bookworm-security", LIBTOOL_FIX)  # in tool's closure, not in mta's
    world.archive.publish()
    third = world.sysext("build", tool, mta, "--base", world.base, "-o", out)
    assert third.returncode == 0, third.stderr
    assert _outcomes(third) == {"tool": "built", "mta": "unchanged"}, third.stderr
    assert len(list(out.glob("tool-*.raw"))) == 2


def test_versions_lists_each_suite(world: World) -> None:
    recipe = world.recipe("perl", ["perl"])
    result = world.sysext("versions", recipe, "--base", world.base)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "perl 5.36.0-7+deb12u4 bookworm-security *",
        "perl 5.36.0-7+deb12u3 bookworm",
    ]


def test_named_base_is_a_minimal_install_of_the_release(world: World) -> None:
    """Without --base, the recipe's [base]: every Priority required/important package of
    the release (and what they need) counts as installed."""
    world.archive.add(
        "bookworm",
        Deb("base-files", "12.4", priority="required", files={"etc/debian_version": b"12.4\n"}),
    )
    world.archive.publish()
    out = world.tmp / "out"
    result = world.sysext("build", world.recipe("tool", ["tool"]), "-o", out)
    assert result.returncode == 0, result.stderr
    packages = release_of(one_image(out), "tool")["X_SYSEXT_PACKAGES"]
    assert packages == "libtool1=1.0-1 mta-a=2.0 tool=1:1.0-1"  # no libc6: it is required
    (image,) = out.glob("*.raw")
    assert image.name.endswith("-12-x86-64.raw")


def test_base_of_another_distribution_is_refused(world: World, tmp_path: Path) -> None:
    other = make_root(tmp_path / "fedora", [], os_id="fedora", version_id="41")
    result = world.sysext(
        "build", world.recipe("tool", ["tool"]), "--base", other, "-o", tmp_path / "out"
    )
    assert_one_line_error(result, "is fedora 41, but recipe tool.toml is for debian")
