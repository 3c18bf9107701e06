"""The pure parts of the apt source: dpkg versions, dependency fields, the resolver against
a base, and which maintainer scripts may stay unrun (tests/test_apt.py builds images)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from sysext.build.debian.archive import Package, PackageIndex, Suite, parse_packages
from sysext.build.debian.base import BaseSystem, usr_path
from sysext.build.debian.control import Relation, parse_relations
from sysext.build.debian.resolve import ResolveError, Wanted, minimal_install, resolve
from sysext.build.debian.scripts import describe, package_effects, script_effects
from sysext.build.debian.version import compare, image_version, satisfies
from sysext.build.sources.apt import PlannedDeb, image_version_of
from sysext.systemd.versioning import version_is_valid

# -- versions --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("older", "newer"),
    [
        ("1.0~rc1", "1.0"),  # ~ sorts before everything, even the end
        ("1.0", "1.0+b1"),
        ("1.0-1", "1.0-1.1"),
        ("2.0", "1:0.1"),  # the epoch wins
        ("1.0a", "1.0b"),
        ("1.9", "1.10"),  # numbers compare as numbers
        ("5.36.0-7+deb12u3", "5.36.0-7+deb12u4"),
        ("2.0.1-3~deb12u1", "2.0.1-3"),
        ("1.2.3", "1.2.3-0.1"),
        ("1.0-1", "1.0a-1"),  # letters sort after the end of a part
    ],
)
def test_dpkg_version_order(older: str, newer: str) -> None:
    assert compare(older, newer) < 0
    assert compare(newer, older) > 0


def test_equal_versions_and_relations() -> None:
    assert compare("1.0", "1.0-0") == 0  # a missing revision is "0"
    assert compare("0:1.0", "1.0") == 0
    assert satisfies("2.36-9", ">=", "2.30")
    assert not satisfies("2.36-9", ">>", "2.36-9")
    assert satisfies("2.36-9", "<=", "2.36-9") and satisfies("2.36-9", "<", "2.36-9")
    assert satisfies("1.0", None, None)


def test_image_versions_use_only_sysupdate_characters() -> None:
    assert image_version("1:2.39.5-0+deb12u2") == "2.39.5_0+deb12u2"
    assert image_version("2.0.1-3~deb12u1") == "2.0.1_3_deb12u1"
    assert all(version_is_valid(image_version(v)) for v in ("1:1.0~rc1+dfsg-1", "7.88.1-10"))
    main = PlannedDeb("htop", "3.2.2-2", "apt://debian/h", "a" * 64, 1)
    assert image_version_of(main, (main,)) == "3.2.2_2"
    lib = PlannedDeb("libnl-3-200", "3.7.0-0.2+b1", "apt://debian/l", "b" * 64, 1)
    fixed = PlannedDeb("libnl-3-200", "3.7.0-0.2+b2", "apt://debian/l", "c" * 64, 1)
    with_lib = image_version_of(main, (main, lib))
    assert with_lib.startswith("3.2.2_2+c") and len(with_lib) == len("3.2.2_2+c") + 8
    assert image_version_of(main, (main, fixed)) != with_lib  # a dependency update shows


def test_relation_fields() -> None:
    assert parse_relations("libc6 (>= 2.34), perl:any, mail-transport-agent | exim4") == (
        (Relation("libc6", ">=", "2.34"),),
        (Relation("perl", arch="any"),),
        (Relation("mail-transport-agent"), Relation("exim4")),
    )
    assert parse_relations("") == ()
    with pytest.raises(Exception, match="cannot parse"):
        parse_relations("libc6 (>= )")


def test_merged_usr_paths() -> None:
    assert usr_path("/lib/x86_64-linux-gnu/libc.so.6") == "usr/lib/x86_64-linux-gnu/libc.so.6"
    assert usr_path("./bin/sh") == "usr/bin/sh"
    assert usr_path("/etc/x") == "etc/x"
    assert usr_path("/.") == ""


# -- the resolver ----------------------------------------------------------------------------

SUITE = Suite("apt://debian/", "bookworm")


def index_of(text: str) -> PackageIndex:
    index = PackageIndex("amd64")
    index.add(parse_packages(text, SUITE))
    return index


def stanza(name: str, version: str, **fields: str) -> str:
    extra = "".join(f"{k.replace('_', '-')}: {v}\n" for k, v in fields.items())
    return (
        f"Package: {name}\nVersion: {version}\nArchitecture: amd64\n{extra}"
        f"Filename: pool/{name}.deb\nSize: 1\nSHA256: {'0' * 64}\n\n"
    )


def base_of(packages: Mapping[str, str], **provides: str) -> BaseSystem:
    installed = {}
    for name, version in packages.items():
        raw = {"Package": name, "Version": version, "Architecture": "amd64"}
        if name in provides:
            raw["Provides"] = provides[name]
        installed[name] = Package(name, version, "amd64", raw)
    return BaseSystem("base", "debian", "12", "bookworm", "amd64", installed)


def names(closure_packages: tuple[Package, ...]) -> list[str]:
    return [p.pin for p in closure_packages]


def test_closure_minus_the_base_with_alternatives_and_virtual_packages() -> None:
    index = index_of(
        stanza("tool", "1.0", Depends="libc6 (>= 2.30), libx | liby, mailer, awk")
        + stanza("libx", "1.0")
        + stanza("liby", "1.0")
        + stanza("mta", "2.0", Provides="mailer")
        + stanza("libc6", "2.38")
    )
    base = base_of({"libc6": "2.36", "mawk": "1.3"}, mawk="awk")
    closure = resolve([Wanted("tool")], index, base)
    assert names(closure.packages) == ["libx=1.0", "mta=2.0", "tool=1.0"]
    assert closure.from_base == ("libc6", "mawk")  # libc6 2.36 meets >= 2.30; mawk provides awk


def test_a_relation_the_base_cannot_meet_is_an_error() -> None:
    index = index_of(stanza("tool", "1.0", Depends="libc6 (>= 2.38)") + stanza("libc6", "2.38"))
    with pytest.raises(ResolveError) as raised:
        resolve([Wanted("tool")], index, base_of({"libc6": "2.36"}))
    assert raised.value.message == (
        "tool 1.0 needs libc6 (>= 2.38) (libc6 2.36 in the base), and a base package is "
        "never replaced"
    )
    # The same through a dependency: the dependency's relation is named.
    index = index_of(
        stanza("tool", "1.0", Depends="libfoo")
        + stanza("libfoo", "1.0", Depends="libc6 (>= 2.38)")
        + stanza("libc6", "2.38")
    )
    with pytest.raises(ResolveError) as raised:
        resolve([Wanted("tool")], index, base_of({"libc6": "2.36"}))
    assert raised.value.message == (
        "tool depends on libfoo: libfoo 1.0 needs libc6 (>= 2.38) (libc6 2.36 in the base), "
        "and a base package is never replaced"
    )


def test_the_newest_version_fitting_the_base_is_taken() -> None:
    index = index_of(
        stanza("perl", "5.36-u4", Depends="perl-base (= 5.36-u4), libperl (= 5.36-u4)")
        + stanza("perl", "5.36-u3", Depends="perl-base (= 5.36-u3), libperl (= 5.36-u3)")
        + stanza("libperl", "5.36-u4", Depends="perl-base (= 5.36-u4)")
        + stanza("libperl", "5.36-u3")
    )
    closure = resolve([Wanted("perl")], index, base_of({"perl-base": "5.36-u3"}))
    assert names(closure.packages) == ["libperl=5.36-u3", "perl=5.36-u3"]


def test_several_providers_need_a_choice() -> None:
    index = index_of(
        stanza("tool", "1.0", Depends="mailer")
        + stanza("mta-a", "1", Provides="mailer")
        + stanza("mta-b", "1", Provides="mailer")
    )
    with pytest.raises(ResolveError, match="virtual package provided by mta-a, mta-b"):
        resolve([Wanted("tool")], index, base_of({}))
    closure = resolve([Wanted("tool"), Wanted("mta-b")], index, base_of({}))
    assert names(closure.packages) == ["mta-b=1", "tool=1.0"]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"Conflicts": "coreutils"}, "tool 1.0 conflicts with base package coreutils"),
        ({"Breaks": "coreutils (<< 10)"}, "tool 1.0 breaks with base package coreutils"),
        ({"Replaces": "coreutils"}, "tool 1.0 would overwrite files of base package coreutils"),
    ],
)
def test_packages_that_would_change_the_base_are_refused(
    fields: dict[str, str], message: str
) -> None:
    index = index_of(stanza("tool", "1.0", **fields))
    with pytest.raises(ResolveError) as raised:
        resolve([Wanted("tool")], index, base_of({"coreutils": "9.1"}))
    assert raised.value.message.startswith(message)
    # Relations whose version does not match the base's are harmless.
    harmless = index_of(stanza("tool", "1.0", Replaces="coreutils (<< 8)"))
    assert names(resolve([Wanted("tool")], harmless, base_of({"coreutils": "9.1"})).packages)


def test_unknown_or_installed_packages_are_errors() -> None:
    index = index_of(stanza("tool", "1.0") + stanza("tool", "0.9"))
    with pytest.raises(ResolveError, match=r"the archive has no tool 2\.0") as raised:
        resolve([Wanted("tool", "2.0")], index, base_of({}))
    assert raised.value.hint == "versions there: 1.0, 0.9"
    with pytest.raises(ResolveError, match="tool is installed in base already"):
        resolve([Wanted("tool")], index, base_of({"tool": "1.0"}))
    assert names(resolve([Wanted("tool", "0.9")], index, base_of({})).packages) == ["tool=0.9"]


def test_minimal_install_is_required_and_important_with_dependencies() -> None:
    index = index_of(
        stanza("libc6", "2.36", Priority="required")
        + stanza("apt", "2.6", Priority="important", Depends="libapt (>= 2.6)")
        + stanza("libapt", "2.6", Priority="optional")
        + stanza("htop", "3.2", Priority="optional")
    )
    base = minimal_install(index, "debian 12 (minimal install)", "debian", "12", "bookworm")
    assert sorted(base.packages) == ["apt", "libapt", "libc6"]
    assert base.files is None


# -- maintainer scripts ----------------------------------------------------------------------

GIT_PREINST = """#!/bin/sh
set -e
dpkg-maintscript-helper rm_conffile /etc/bash_completion.d/git 1:1.8.0-1\\~ -- "$@"
if test "$1" = upgrade &&
   dpkg --compare-versions "$2" lt-nl '1:1.8.4~rc0-1'; then
	mkdir -m 755 -p /var/lib/git
	( cd /var/lib/git; for target in ../../cache/git/*; do ln -s "$target" x; done )
fi
"""

TCPDUMP_POSTINST = """#!/bin/sh -e
if ! getent group tcpdump >/dev/null 2>&1; then
    addgroup --system --quiet tcpdump
fi
if dpkg --compare-versions "$2" lt-nl "4.99.1-3~"; then
    rm -f "$OLD_LOCAL_APP_PROFILE"
fi
if [ "$1" = "configure" ]; then
    APP_PROFILE="/etc/apparmor.d/usr.bin.tcpdump"
    if aa-enabled --quiet 2>/dev/null; then
        apparmor_parser -r -T -W "$APP_PROFILE" || true
    fi
fi
"""


def test_upgrade_only_actions_have_no_effect() -> None:
    assert script_effects("preinst", GIT_PREINST) == []


def test_first_install_actions_are_named() -> None:
    effects = script_effects("postinst", TCPDUMP_POSTINST)
    assert describe(effects) == (
        "postinst runs addgroup (creates a user or group), apparmor_parser (loads an "
        "AppArmor profile)"
    )


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            '#!/bin/sh\ncase "$1" in\n  configure) add-shell /usr/bin/tmux ;;\n'
            "  abort-upgrade|abort-remove) ;;\nesac\n",
            ["add-shell"],
        ),
        ('#!/bin/sh\ncase "$1" in\n  upgrade) adduser x ;;\nesac\n', []),
        ('#!/bin/sh\nif [ "$1" = configure ] && [ -n "$2" ]; then adduser x; fi\n', []),
        ('#!/bin/sh\n[ -z "$2" ] || deb-systemd-helper enable x.service\n', []),
        ("#!/bin/sh\nupdate-alternatives --remove rename /usr/bin/prename\n", []),
        (
            "#!/bin/sh\nupdate-alternatives --install /usr/bin/nc nc /bin/nc.openbsd 50\n",
            ["update-alternatives"],
        ),
        ("#!/bin/sh\n. /usr/share/debconf/confmodule\ndb_get foo/bar\n", [".", "db_get"]),
        ('#!/bin/sh\necho "x" >> /etc/shells\n', ["> /etc/shells"]),
        ("#!/bin/sh\nldconfig\nsystemd-tmpfiles --create foo.conf >/dev/null || true\n", []),
        ("#!/bin/sh\nsystemd-sysusers foo.conf\n", ["systemd-sysusers"]),
        ("#!/bin/sh\nX=$(chown root /x)\n", ["chown"]),
        ("#!/bin/sh\nsetup() {\n  chmod 4755 /usr/bin/x\n}\nsetup\n", ["chmod"]),
        ("#!/usr/bin/perl\nsystem('adduser x');\n", ["#!/usr/bin/perl"]),
        ("#!/bin/sh\ncat <<EOF > /dev/null\nadduser x\nEOF\n", []),
    ],
)
def test_script_shapes(script: str, expected: list[str]) -> None:
    assert [e.command for e in script_effects("postinst", script)] == expected


def test_only_first_install_scripts_are_read() -> None:
    removal = "#!/bin/sh\nuserdel tcpdump\n"
    assert package_effects({"postrm": removal, "prerm": removal}) == []
    assert [e.script for e in package_effects({"config": "#!/bin/sh\ndb_input x\n"})] == ["config"]
