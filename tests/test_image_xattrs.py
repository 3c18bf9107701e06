"""Issue 19, finding 8: file capabilities (and other privileged xattrs) are refused like
setuid. Images are built with the real tools from trees whose xattrs were set by the real
`setcap` (mksquashfs and mkfs.erofs keep a tree's xattrs, unlike `sysext pack`); what the
readers report is compared with what the kernel shows once the image is mounted, and the
capability is shown to really work on the mounted image before the lint refuses it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from sysext.image.lint import Severity, lint_image
from sysext.image.read import read_image
from sysext.image.xattrs import describe_capability
from tests.servers import run_cli

pytestmark = pytest.mark.root(reason="setcap and loop mounts need root")

RELEASE = "ID=_any\nSYSEXT_ID=caps\nSYSEXT_VERSION_ID=1.0\nARCHITECTURE=x86-64\n"
FILENAME = "caps-1.0-x86-64.raw"


def capability_tree(base: Path) -> Path:
    """usr/bin/capcat: a copy of cat with cap_setuid,cap_setgid=ep (the finding's binary);
    usr/share/caps: trusted.overlay.opaque (hides the host's directory once merged);
    usr/share/doc/note and five usr/share/doc/same*: only user.* xattrs, which grant
    nothing; the five share one long value (in otherwise different sets), which
    mkfs.erofs stores once as a shared xattr and mksquashfs out of line, so both readers'
    indirect paths are compared too."""
    tree = base / "tree"
    (tree / "usr/bin").mkdir(parents=True)
    (tree / "usr/share/doc").mkdir(parents=True)
    (tree / "usr/share/caps").mkdir()
    (tree / "usr/share/caps/data").write_text("data\n")
    shutil.copy2(shutil.which("cat") or "/bin/cat", tree / "usr/bin/capcat")
    subprocess.run(["setcap", "cap_setuid,cap_setgid=ep", str(tree / "usr/bin/capcat")],
                   check=True)  # fmt: skip
    os.setxattr(tree / "usr/share/caps", "trusted.overlay.opaque", b"y")
    (tree / "usr/share/doc/note").write_text("note\n")
    os.setxattr(tree / "usr/share/doc/note", "user.comment", b"harmless")
    for index in range(5):
        (tree / f"usr/share/doc/same{index}").write_text(f"{index}\n")
        os.setxattr(tree / f"usr/share/doc/same{index}", "user.shared", b"long value " * 40)
        os.setxattr(tree / f"usr/share/doc/same{index}", "user.index", str(index).encode())
    release = tree / "usr/lib/extension-release.d"
    release.mkdir(parents=True)
    (release / "extension-release.caps").write_text(RELEASE)
    return tree


def build(tree: Path, fmt: str, out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    image = out / FILENAME
    if fmt == "squashfs":
        subprocess.run(["mksquashfs", str(tree), str(image), "-all-root", "-noappend",
                        "-quiet", "-no-progress", "-xattrs"],
                       check=True, stdout=subprocess.DEVNULL)  # fmt: skip
    else:
        subprocess.run(["mkfs.erofs", "--all-root", "--quiet", str(image), str(tree)],
                       check=True)  # fmt: skip
    return image


# In a private mount namespace: mount the image, list every entry's xattrs, and run the
# capability-carrying cat as nobody to print its effective capabilities.
_KERNEL_VIEW = r"""
import json, os, subprocess, sys
fstype, image, where = sys.argv[1:4]
subprocess.run(["mount", "-o", "loop,ro", "-t", fstype, image, where], check=True)
try:
    xattrs = {}
    for top, dirs, files in os.walk(where):
        for name in dirs + files:
            full = os.path.join(top, name)
            names = sorted(os.listxattr(full, follow_symlinks=False))
            if names:
                rel = os.path.relpath(full, where)
                xattrs[rel] = {n: os.getxattr(full, n, follow_symlinks=False).hex()
                               for n in names}
    status = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         os.path.join(where, "usr/bin/capcat"), "/proc/self/status"],
        capture_output=True, text=True, check=True).stdout
    caps = [line.split()[1] for line in status.splitlines() if line.startswith("CapEff:")]
    print(json.dumps({"xattrs": xattrs, "capeff": caps[0]}))
finally:
    subprocess.run(["umount", where], check=True)
"""


def kernel_view(fstype: str, image: Path, scratch: Path) -> dict[str, object]:
    where = scratch / "mnt"
    where.mkdir(exist_ok=True)
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", sys.executable, "-c", _KERNEL_VIEW,
         fstype, str(image), str(where)],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    view: dict[str, object] = json.loads(proc.stdout)
    return view


@pytest.mark.parametrize("fmt", ["squashfs", "erofs"])
def test_capabilities_are_read_as_the_kernel_shows_them_and_refused(
    tmp_path: Path, fmt: str
) -> None:
    image = build(capability_tree(tmp_path), fmt, tmp_path / "out")
    kernel = kernel_view(fmt, image, tmp_path)
    # The attack of the finding, for real: run as nobody from the mounted image, the
    # program holds cap_setuid and cap_setgid (bits 6 and 7).
    assert kernel["capeff"] == "00000000000000c0"
    # The readers see exactly the xattrs the kernel shows.
    mine = {
        e.path: {name: value.hex() for name, value in sorted(e.xattrs)}
        for e in read_image(image).entries
        if e.xattrs
    }
    assert mine == kernel["xattrs"]
    assert set(mine) == {"usr/bin/capcat", "usr/share/caps", "usr/share/doc/note",
                         *(f"usr/share/doc/same{index}" for index in range(5))}  # fmt: skip

    report = lint_image(image)
    errors = {(f.code, f.message.split(" ", 1)[0]) for f in report.errors}
    assert errors == {("tree-capability", "usr/bin/capcat"), ("tree-xattr", "usr/share/caps")}
    message = next(f.message for f in report.errors if f.code == "tree-capability")
    assert "(cap_setgid,cap_setuid=ep)" in message and "--allow-xattr" in message
    assert "trusted.overlay.opaque" in next(
        f.message for f in report.errors if f.code == "tree-xattr"
    )
    # Allowed per path, like setuid: only the named paths.
    allowed = lint_image(image, allow_xattrs=["/usr/bin/capcat"])
    assert {f.code for f in allowed.errors} == {"tree-xattr"}
    assert lint_image(image, allow_xattrs=["/usr/bin/capcat", "usr/share/caps"]).errors == ()


def test_validate_and_inspect_cli(tmp_path: Path) -> None:
    image = build(capability_tree(tmp_path), "squashfs", tmp_path / "out")
    refused = run_cli("validate", image)
    assert refused.returncode == 1
    assert "[tree-capability]" in refused.stdout and "[tree-xattr]" in refused.stdout
    allowed = run_cli("validate", image, "--allow-xattr", "/usr/bin/capcat",
                      "--allow-xattr", "/usr/share/caps")  # fmt: skip
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr
    shown = run_cli("inspect", image)
    assert "usr/bin/capcat [xattrs: security.capability]" in shown.stdout
    data = json.loads(run_cli("inspect", image, "--json").stdout)
    entry = next(e for e in data["entries"] if e["path"] == "usr/share/doc/note")
    assert entry["xattrs"] == ["user.comment"]
    assert "xattrs" not in next(e for e in data["entries"] if e["path"] == "usr/bin")


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (bytes.fromhex("01000002c0000000000000000000000000000000"), "cap_setgid,cap_setuid=ep"),
        (bytes.fromhex("00000002c0000000000000000000000000000000"), "cap_setgid,cap_setuid=p"),
        (bytes.fromhex("010000020020000000200000000000000000000000"), "cap_net_raw=eip"),
        (bytes.fromhex("01000003000000000000000001000000000000000000000000"),
         "cap_mac_override=ep"),
        (b"\x01\x00", "malformed"),
        (bytes.fromhex("010000090000000000000000"), "malformed"),
    ],
)  # fmt: skip
def test_capability_notation(value: bytes, shown: str) -> None:
    assert describe_capability(value) == shown


def test_pack_never_writes_xattrs(tmp_path: Path) -> None:
    """`sysext pack` drops a tree's xattrs (both writers), so a built image never needs the
    allowance: the capability of the tree does not reach the image."""
    from sysext.build.pack import pack
    from sysext.image.formats import ImageFormat
    from sysext.systemd.architecture import Architecture
    from sysext.systemd.extension_release import ExtensionRelease

    tree = capability_tree(tmp_path)
    shutil.rmtree(tree / "usr/lib")
    release = ExtensionRelease(name="caps", version="1.0", arch=Architecture.parse("x86-64"))
    for fmt in ImageFormat:
        built = pack(tree, release, tmp_path / fmt.value, image_format=fmt)
        assert [e.path for e in read_image(built.path).entries if e.xattrs] == []
        assert lint_image(built.path).errors == ()
        assert not any(f.severity is Severity.ERROR for f in lint_image(built.path).findings)
