"""Merge extension images with the real `systemd-sysext --root=ROOT merge`, run a command.

How (DESIGN.md §4): as root, inside `unshare -m --propagation private`, mount a tmpfs on
/run (systemd-sysext keeps its staging mounts there; without it, it prints success and
merges nothing) and make / rshared; place each image as a real file (not a symlink) in
ROOT/var/lib/extensions/NAME.raw, write ROOT/etc/os-release, merge, run the command, look at
`status`, and unmerge. Everything happens in a private mount namespace, so the host's /usr
is never touched. Used by tests of `sysext pack` and of recipe builds alike.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from sysext.image.read import read_image


@dataclass(frozen=True)
class Step:
    returncode: int
    stdout: str
    stderr: str


@dataclass(frozen=True)
class MergeResult:
    root: Path  # the --root directory (gone after the call unless keep_root=True)
    merge: Step
    status: Step  # `systemd-sysext --root=ROOT list` while merged (252's `status` ignores
    # --root, so `merged` reads the overlay's own record instead)
    merged: Step  # ROOT/usr/.systemd-sysext/extensions: the names systemd merged
    command: Step  # the command run while merged
    unmerge: Step
    after_unmerge: Step  # the command run again after unmerge (should fail)

    @property
    def merged_names(self) -> list[str]:
        return self.merged.stdout.split() if self.merged.returncode == 0 else []


_SCRIPT = r"""
set -u
mount -t tmpfs tmpfs /run || exit 90
mount --make-rshared / || exit 91
cd "$OUT"
systemd-sysext --root="$ROOT" merge >merge.out 2>merge.err; echo $? >merge.rc
systemd-sysext --root="$ROOT" list >status.out 2>status.err; echo $? >status.rc
cat "$ROOT/usr/.systemd-sysext/extensions" >merged.out 2>merged.err; echo $? >merged.rc
(eval "$COMMAND") >command.out 2>command.err; echo $? >command.rc
systemd-sysext --root="$ROOT" unmerge >unmerge.out 2>unmerge.err; echo $? >unmerge.rc
(eval "$COMMAND") >after.out 2>after.err; echo $? >after.rc
exit 0
"""


def activation_name(image: Path) -> str:
    """The NAME of the image's single extension-release.NAME file."""
    names = list(read_image(image).release_files)
    if len(names) != 1:
        raise ValueError(f"{image}: expected one release file, found {names}")
    return names[0]


def merge_and_run(
    images: Sequence[Path],
    os_release: str,
    command: Sequence[str],
    *,
    names: Sequence[str] | None = None,
    keep_root: Path | None = None,
) -> MergeResult:
    """Merge `images` into a fresh ROOT with host `os_release`, run `command`, unmerge.

    `command` may use `{root}` for the ROOT path, e.g. ["{root}/usr/bin/hello", "--version"].
    Each image is copied to ROOT/var/lib/extensions/NAME.raw, NAME being its release file's
    name (or `names[i]`), which is how hosts activate extensions (spec §1.2).
    """
    if os.geteuid() != 0:
        raise PermissionError("merge_and_run needs root (loop mounts)")
    work = Path(tempfile.mkdtemp(prefix="sysext-merge-"))
    try:
        root = keep_root or work / "root"
        out = work / "out"
        out.mkdir()
        (root / "etc").mkdir(parents=True, exist_ok=True)
        (root / "etc/os-release").write_text(os_release, encoding="utf-8")
        # The host's /usr must exist and hold something, or there is nothing to overlay.
        (root / "usr/lib").mkdir(parents=True, exist_ok=True)
        (root / "usr/lib/host-marker").write_text("host\n", encoding="utf-8")
        extensions = root / "var/lib/extensions"
        extensions.mkdir(parents=True, exist_ok=True)
        for index, image in enumerate(images):
            name = names[index] if names else activation_name(image)
            shutil.copyfile(image, extensions / f"{name}.raw")
        argv = [part.replace("{root}", str(root)) for part in command]
        env = {
            **os.environ,
            "ROOT": str(root),
            "OUT": str(out),
            "COMMAND": shlex.join(argv),
            "SYSTEMD_LOG_LEVEL": "info",
        }
        proc = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", _SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"mount namespace setup failed ({proc.returncode}): {proc.stderr}")

        def step(stem: str) -> Step:
            return Step(
                int((out / f"{stem}.rc").read_text()),
                (out / f"{stem}.out").read_text(errors="replace"),
                (out / f"{stem}.err").read_text(errors="replace"),
            )

        return MergeResult(
            root=root,
            merge=step("merge"),
            status=step("status"),
            merged=step("merged"),
            command=step("command"),
            unmerge=step("unmerge"),
            after_unmerge=step("after"),
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
