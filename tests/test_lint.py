"""`sysext validate` / sysext.lint against hand-made images (spec §1, §7.5, §7.6).

The images here are written with the real gensquashfs from explicit pack files, so they can
be wrong in every way `sysext pack` itself refuses to be.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from sysext.image.lint import Severity, lint_image
from sysext.systemd.osrelease import format_os_release, parse_os_release
from tests.servers import run_cli

FLATCAR = {"ID": "flatcar", "VERSION_ID": "3815.2.0", "SYSEXT_LEVEL": "1.0"}


def make_image(
    base: Path,
    name: str,
    fields: Mapping[str, str] | None,
    *,
    filename: str | None = None,
    extra_lines: tuple[str, ...] = (),
    release_name: str | None = None,
) -> Path:
    """A squashfs image with usr/bin/hello and extension-release.NAME holding `fields`."""
    src = base / "src"
    src.mkdir(parents=True, exist_ok=True)
    (src / "hello").write_text("#!/bin/sh\necho hello\n")
    lines = [
        "dir /usr 0755 0 0",
        "dir /usr/bin 0755 0 0",
        f"file /usr/bin/hello 0755 0 0 {src / 'hello'}",
    ]
    if fields is not None:
        (src / "release").write_text(format_os_release(fields) if fields else "")
        lines += [
            "dir /usr/lib 0755 0 0",
            "dir /usr/lib/extension-release.d 0755 0 0",
            f"file /usr/lib/extension-release.d/extension-release.{release_name or name} "
            f"0644 0 0 {src / 'release'}",
        ]
    lines += [line.replace("{src}", str(src)) for line in extra_lines]
    (src / "pack").write_text("\n".join(lines) + "\n")
    out = base / "images"
    out.mkdir(exist_ok=True)
    image = out / (
        filename
        or f"{name}-{fields.get('SYSEXT_VERSION_ID', '1.0') if fields else '1.0'}-x86-64.raw"
    )
    image.unlink(missing_ok=True)
    subprocess.run(
        ["gensquashfs", "--pack-file", str(src / "pack"), "-q", "-c", "gzip", str(image)],
        check=True,
    )
    return image


def good_fields(**changes: str) -> dict[str, str]:
    fields = {
        "ID": "flatcar",
        "SYSEXT_LEVEL": "1.0",
        "ARCHITECTURE": "x86-64",
        "SYSEXT_ID": "hello",
        "SYSEXT_VERSION_ID": "1.0",
        "SYSEXT_SCOPE": "system portable",
    }
    fields.update(changes)
    return {k: v for k, v in fields.items() if v != "<drop>"}


def codes(image: Path, **kwargs: object) -> set[str]:
    report = lint_image(image, **kwargs)  # type: ignore[arg-type]
    return {f.code for f in report.findings if f.severity is Severity.ERROR}


def test_a_good_image_has_no_errors(tmp_path: Path) -> None:
    image = make_image(tmp_path, "hello", good_fields())
    report = lint_image(image)
    assert report.errors == ()
    assert report.release_name == "hello"
    result = run_cli("validate", image)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 error(s)" in result.stdout


@pytest.mark.parametrize(
    ("fields", "code", "words"),
    [
        (good_fields(ARCHITECTURE="x86_64"), "arch-invalid", "x86-64"),
        (good_fields(ARCHITECTURE="amd64"), "arch-invalid", "not a systemd architecture"),
        (good_fields(ID="<drop>", SYSEXT_LEVEL="<drop>"), "id-missing", "ID= is missing"),
        (good_fields(SYSEXT_VERSION_ID="1.0~rc1"), "version-invalid", "'~'"),
        (good_fields(SYSEXT_SCOPE=""), "scope-empty", "never merged"),
        ({}, "release-empty", "empty"),
    ],
)
def test_bad_release_fields_are_errors(
    tmp_path: Path, fields: dict[str, str], code: str, words: str
) -> None:
    image = make_image(tmp_path, "hello", fields, filename="hello.raw")
    report = lint_image(image)
    found = [f for f in report.errors if f.code == code]
    assert found, report.findings
    assert words in found[0].message
    result = run_cli("validate", image)
    assert result.returncode == 1
    assert f"[{code}]" in result.stdout


def test_missing_release_file(tmp_path: Path) -> None:
    image = make_image(tmp_path, "hello", None, filename="hello.raw")
    assert codes(image) == {"release-missing"}
    result = run_cli("validate", image, "--os-release", _osr(tmp_path, FLATCAR))
    assert result.returncode == 1
    assert "would NOT merge: the image carries no release data" in result.stdout


@pytest.mark.parametrize(
    ("extra", "code"),
    [
        (("dir /etc 0755 0 0", "file /etc/hello.conf 0644 0 0 {src}/hello"), "tree-toplevel"),
        (("file /usr/lib/os-release 0644 0 0 {src}/hello",), "tree-os-release"),
        (("file /usr/bin/theirs 0755 1000 1000 {src}/hello",), "tree-owner"),
        (("pipe /usr/bin/fifo 0644 0 0",), "tree-special"),
        (("nod /usr/bin/null 0666 0 0 c 1 3",), "tree-special"),
    ],
)
def test_bad_contents_are_errors(tmp_path: Path, extra: tuple[str, ...], code: str) -> None:
    image = make_image(tmp_path, "hello", good_fields(), extra_lines=extra)
    assert code in codes(image)


def test_sbin_and_units_without_reload_are_warnings_setuid_needs_an_allowance(
    tmp_path: Path,
) -> None:
    extra = (
        "file /usr/bin/su2 4755 0 0 {src}/hello",
        "dir /usr/sbin 0755 0 0",
        "file /usr/sbin/x 0755 0 0 {src}/hello",
        "dir /usr/lib/systemd 0755 0 0",
        "dir /usr/lib/systemd/system 0755 0 0",
        "file /usr/lib/systemd/system/x.service 0644 0 0 {src}/hello",
    )
    image = make_image(tmp_path, "hello", good_fields(), extra_lines=extra)
    assert {f.code for f in lint_image(image).errors} == {"tree-setuid"}
    report = lint_image(image, allow_setuid=["/usr/bin/su2"])
    warnings = {f.code for f in report.findings if f.severity is Severity.WARNING}
    assert {"tree-sbin", "reload-manager"} <= warnings
    assert report.errors == ()


# --- symlinks resolved as the host resolves them (issue 19, finding 9) ----------------------

_DIRS = ("dir /usr/share 0755 0 0",)  # make_image adds /usr/lib
LINK_CASES = [
    # (id, pack lines, {link: what it resolves to, None when that is its target} expected
    # as errors)
    ("direct", ("slink /usr/bin/pw 0777 0 0 /etc/shadow",), {"usr/bin/pw": None}),
    ("relative", ("slink /usr/bin/pw 0777 0 0 ../../etc/shadow",), {"usr/bin/pw": None}),
    ("dir-etc", ("slink /usr/lib/hostetc 0777 0 0 /etc",), {"usr/lib/hostetc": None}),
    ("dir-root", ("slink /usr/lib/hostroot 0777 0 0 /",), {"usr/lib/hostroot": None}),
    ("dir-var-lib", ("slink /usr/lib/varlib 0777 0 0 ../../var/lib",),
     {"usr/lib/varlib": "/var/lib"}),
    ("two-hop", ("slink /usr/lib/a 0777 0 0 ../../etc", "slink /usr/lib/b 0777 0 0 a/shadow"),
     {"usr/lib/a": "/etc", "usr/lib/b": "/etc/shadow"}),
    ("through-dir-link", ("slink /usr/lib/up 0777 0 0 ..",
                          "slink /usr/lib/esc 0777 0 0 up/../etc/shadow"),
     {"usr/lib/esc": "/etc/shadow"}),
    ("into-image-dir-then-out", ("dir /usr/share/d 0755 0 0",
                                 "slink /usr/share/d/l 0777 0 0 ../../../root/.ssh"),
     {"usr/share/d/l": "/root/.ssh"}),
    ("host-var-run", ("slink /usr/lib/run 0777 0 0 /var/run/../etc/sudoers",),
     {"usr/lib/run": "/etc/sudoers"}),
    ("host-lib", ("slink /usr/lib/l 0777 0 0 /lib/../../etc/ssh/ssh_host_rsa_key",),
     {"usr/lib/l": "/etc/ssh/ssh_host_rsa_key"}),
    ("credentials", ("slink /usr/lib/c 0777 0 0 /run/credentials/x.service/token",),
     {"usr/lib/c": None}),
    # Not secrets: ordinary links, links into /etc below a secret, loops (ELOOP on a host).
    ("harmless", ("slink /usr/bin/sh2 0777 0 0 hello",
                  "slink /usr/lib/tz 0777 0 0 /etc/localtime",
                  "slink /usr/lib/conf 0777 0 0 ../../etc/hello/hello.conf",
                  "slink /usr/share/up 0777 0 0 ../lib",
                  "slink /usr/lib/l1 0777 0 0 l2", "slink /usr/lib/l2 0777 0 0 l1",
                  "slink /usr/lib/lexical 0777 0 0 /usr/lib/../etc/shadow"),
     {}),
]  # fmt: skip


@pytest.mark.parametrize(("case", "lines", "expected"), LINK_CASES, ids=[c[0] for c in LINK_CASES])
def test_links_to_host_secrets_resolve_through_directories_and_chains(
    tmp_path: Path, case: str, lines: tuple[str, ...], expected: dict[str, str | None]
) -> None:
    image = make_image(tmp_path, "hello", good_fields(), extra_lines=_DIRS + lines)
    report = lint_image(image)
    found = {f.message.split(" ", 1)[0]: f.message for f in report.errors}
    assert {f.code for f in report.errors} <= {"tree-symlink-sensitive"}
    assert set(found) == set(expected), found
    for link, resolved in expected.items():
        assert "host secret" in found[link]
        if resolved is not None:
            assert f"(resolving to {resolved})" in found[link]


def test_links_too_costly_to_resolve_are_refused_not_skipped(tmp_path: Path) -> None:
    """Hostile link sets (long targets walking deep) exhaust the resolution budget: the
    image is refused, so a secret link hidden behind them cannot pass unresolved."""
    deep = "/".join(["a"] * 2000)
    lines = [f"slink /usr/share/l{i} 0777 0 0 {deep}" for i in range(60)]
    lines.append("slink /usr/share/zz 0777 0 0 /etc/shadow")  # checked after the others
    image = make_image(tmp_path, "hello", good_fields(), extra_lines=(*_DIRS, *lines))
    report = lint_image(image)
    assert {f.code for f in report.errors} == {"tree-symlink-complex"}
    assert "takes more steps than any real image needs" in report.errors[0].message


# --- file name vs release (spec §1.2, §7.6) ------------------------------------------------


@pytest.mark.parametrize(
    ("filename", "code"),
    [
        ("hello-1.0-x86-64.raw", None),
        ("hello.raw", None),  # the activation name itself
        ("hello-2.0-x86-64.raw", "filename-mismatch"),
        ("hello-1.0-arm64.raw", "filename-mismatch"),
        ("other-1.0-x86-64.raw", "filename-name"),
        ("hello-1.0-x86-64.raw.json", "filename-suffix"),
        ("hello-1.0-x86-64.img", "filename-suffix"),
    ],
)
def test_file_name_must_agree_with_release(tmp_path: Path, filename: str, code: str | None) -> None:
    image = make_image(tmp_path, "hello", good_fields(), filename=filename)
    found = codes(image)
    if code is None:
        assert not {c for c in found if c.startswith("filename")}
    else:
        assert code in found


@pytest.mark.parametrize(
    ("version", "version_id", "filename", "code"),
    [
        ("1.0", "3815.2.0", "hello-1.0-3815.2.0-x86-64.raw", None),
        ("1.0", "3815.2.0", "hello.raw", None),  # the activation name itself
        # The registry refuses both (registry/service/validation.py), so validate does too.
        ("1.0", "3815.2.0", "hello-1.0-x86-64.raw", "filename-unbound"),
        ("9.0-1", "3815", "hello-9.0-1-3815-x86-64.raw", "filename-bound-ambiguous"),
        ("9.0", "3815-2", "hello-9.0-3815-2-x86-64.raw", "filename-bound-ambiguous"),
    ],
)
def test_os_bound_names_follow_the_registry(
    tmp_path: Path, version: str, version_id: str, filename: str, code: str | None
) -> None:
    fields = good_fields(SYSEXT_VERSION_ID=version, VERSION_ID=version_id)
    image = make_image(tmp_path, "hello", fields, filename=filename)
    found = {c for c in codes(image) if c.startswith("filename")}
    assert found == ({code} if code else set())
    if code:
        result = run_cli("validate", image)
        assert result.returncode == 1 and f"[{code}]" in result.stdout


def test_sysext_suffix_warns_about_systemd_252(tmp_path: Path) -> None:
    image = make_image(tmp_path, "hello", good_fields(), filename="hello.sysext.raw")
    report = lint_image(image)
    assert report.errors == ()
    assert "filename-sysext-suffix" in {f.code for f in report.findings}


def test_versioned_name_gets_the_activation_note(tmp_path: Path) -> None:
    image = make_image(tmp_path, "hello", good_fields())
    report = lint_image(image)
    notes = [f.message for f in report.findings if f.code == "activation"]
    assert notes and "/etc/extensions/hello.raw" in notes[0]


def test_several_release_files_warn_and_the_matching_one_is_used(tmp_path: Path) -> None:
    extra = ("file /usr/lib/extension-release.d/extension-release.zzz 0644 0 0 {src}/release",)
    image = make_image(tmp_path, "hello", good_fields(), extra_lines=extra)
    report = lint_image(image)
    assert report.release_name == "hello"
    assert "release-several" in {f.code for f in report.findings}


# --- host verdicts: every row of spec §7.5 --------------------------------------------------

_ROWS = [
    ("ID=flatcar SYSEXT_LEVEL=1.0", "system", True, "match"),
    ("ID=flatcar SYSEXT_LEVEL=1", "system", False, "step 8 (level)"),
    ("ID=flatcar SYSEXT_LEVEL=2.0 VERSION_ID=3815.2.0", "system", False, "step 8 (level)"),
    ("ID=flatcar VERSION_ID=3815.2.0", "system", True, "VERSION_ID=3815.2.0"),
    ("ID=flatcar VERSION_ID=3815.2.1", "system", False, "step 8 (version)"),
    ("ID=flatcar", "system", False, "step 8 (version)"),
    ("ID=_any", "system", True, "_any"),
    ("ID=_any ARCHITECTURE=arm64", "system", False, "step 3 (architecture)"),
    ("ID=_any ARCHITECTURE=x86_64", "system", False, "not a systemd architecture"),
    ("ID=_any ARCHITECTURE=_any", "system", True, "_any"),
    ("ID=fedora SYSEXT_LEVEL=1.0", "system", False, "step 6 (ID)"),
    ("SYSEXT_LEVEL=1.0", "system", False, "step 4 (ID)"),
    ("ID=flatcar SYSEXT_LEVEL=1.0", "initrd", False, "step 2 (scope)"),
    ("ID=flatcar SYSEXT_LEVEL=1.0 SYSEXT_SCOPE=initrd+system", "initrd", True, "match"),
    ("ID=_any SYSEXT_SCOPE=portable", "system", False, "step 2 (scope)"),
]


def _fields(spec: str) -> dict[str, str]:
    return {k: v.replace("+", " ") for k, _, v in (w.partition("=") for w in spec.split())}


def _osr(base: Path, fields: Mapping[str, str]) -> Path:
    path = base / "os-release"
    path.write_text(format_os_release(fields))
    return path


@pytest.mark.parametrize(
    ("spec", "scope", "merges", "reason"), _ROWS, ids=[r[0] + "@" + r[1] for r in _ROWS]
)
def test_spec_7_5_rows_through_validate(
    tmp_path: Path, spec: str, scope: str, merges: bool, reason: str
) -> None:
    image = make_image(
        tmp_path, "hello", {**_fields(spec), "SYSEXT_ID": "hello"}, filename="hello.raw"
    )
    report = lint_image(image, host_os_release=FLATCAR, host_arch="x86-64", scope=scope)
    assert report.host is not None
    assert report.host.merges is merges, report.host.reason
    assert reason in report.host.reason


def test_validate_cli_reports_the_failing_step(tmp_path: Path) -> None:
    image = make_image(tmp_path, "hello", good_fields(SYSEXT_LEVEL="1"))
    osr = _osr(tmp_path, FLATCAR)
    result = run_cli("validate", image, "--os-release", osr, "--arch", "x86-64")
    assert result.returncode == 1
    assert "would NOT merge: step 8 (level): SYSEXT_LEVEL=1 does not equal" in result.stdout
    ok = make_image(tmp_path, "hello", good_fields())
    result = run_cli("validate", ok, "--os-release", osr, "--arch", "x86-64", "--json")
    assert result.returncode == 0, result.stdout
    assert '"merges": true' in result.stdout
    result = run_cli("validate", ok, "--os-release", osr, "--arch", "x86-64", "--initrd")
    assert result.returncode == 1
    assert "step 2 (scope)" in result.stdout


def test_validate_refuses_garbage_and_a_bad_os_release(tmp_path: Path) -> None:
    garbage = tmp_path / "x.raw"
    garbage.write_bytes(b"\0" * 8192)
    result = run_cli("validate", garbage)
    assert result.returncode == 2
    assert "not a squashfs or erofs image" in result.stderr
    assert "Traceback" not in result.stderr
    image = make_image(tmp_path, "hello", good_fields())
    bad = tmp_path / "osr"
    bad.write_text("this is not os-release\n")
    result = run_cli("validate", image, "--os-release", bad)
    assert result.returncode == 2
    assert "expected KEY=value" in result.stderr


def test_host_without_architecture_uses_this_machine(tmp_path: Path) -> None:
    image = make_image(tmp_path, "hello", good_fields(ARCHITECTURE="<drop>"), filename="hello.raw")
    report = lint_image(image, host_os_release=parse_os_release("ID=flatcar\nSYSEXT_LEVEL=1.0\n"))
    assert report.host is not None and report.host.merges


# --- sysext inspect ------------------------------------------------------------------------


def test_inspect_shows_release_files_owners_modes_and_checks(tmp_path: Path) -> None:
    extra = ("file /usr/bin/theirs 0750 1000 100 {src}/hello", "slink /usr/bin/hi 0777 0 0 hello")
    image = make_image(tmp_path, "hello", good_fields(), extra_lines=extra)
    result = run_cli("inspect", image)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "format      squashfs, compression gzip" in out
    assert "  SYSEXT_SCOPE=system portable" in out
    assert "-rwxr-xr-x 0/0" in out and "usr/bin/hello" in out
    assert "-rwxr-x--- 1000/100" in out
    assert "usr/bin/hi -> hello" in out
    assert "[tree-owner]" in out


def test_inspect_json(tmp_path: Path) -> None:
    import json

    image = make_image(tmp_path, "hello", good_fields())
    result = run_cli("inspect", image, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["format"] == "squashfs"
    assert data["size"] == image.stat().st_size
    assert data["release_files"]["hello"]["ID"] == "flatcar"
    hello = next(e for e in data["entries"] if e["path"] == "usr/bin/hello")
    assert hello == {
        "path": "usr/bin/hello",
        "kind": "file",
        "mode": "0755",
        "uid": 0,
        "gid": 0,
        "size": 21,
    }
    assert all(c["severity"] != "error" for c in data["checks"])


def test_inspect_garbage_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "x.raw"
    path.write_bytes(b"PK\3\4" + b"\0" * 3000)
    result = run_cli("inspect", path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "not a squashfs or erofs image" in result.stderr
    assert "Traceback" not in result.stderr


def test_unit_starting_a_missing_binary_is_an_error(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "src/unit").write_text("[Service]\nExecStart=/usr/local/bin/hello --x\n")
    (tmp_path / "src/good").write_text("[Service]\nExecStart=/usr/bin/hello\n")
    units = ("dir /usr/lib/systemd 0755 0 0", "dir /usr/lib/systemd/system 0755 0 0")
    bad = make_image(
        tmp_path, "hello", good_fields(EXTENSION_RELOAD_MANAGER="1"),
        extra_lines=(*units, "file /usr/lib/systemd/system/hello.service 0644 0 0 {src}/unit"),
    )  # fmt: skip
    report = lint_image(bad)
    found = [f for f in report.errors if f.code == "unit-exec-missing"]
    assert found and "usr/lib/systemd/system/hello.service: line 2: ExecStart=" in found[0].message
    assert "/usr/local/bin/hello is neither in the image" in found[0].message
    good = make_image(
        tmp_path, "hello", good_fields(EXTENSION_RELOAD_MANAGER="1"),
        extra_lines=(*units, "file /usr/lib/systemd/system/hello.service 0644 0 0 {src}/good"),
    )  # fmt: skip
    assert lint_image(good).errors == ()
