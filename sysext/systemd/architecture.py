"""CPU architectures in systemd's vocabulary (spec §1.4).

systemd spells them `x86-64` and `arm64`; upstream projects say `amd64`, `x86_64`,
`aarch64`. Everything inside this project uses the systemd name; recipes map to upstream
names explicitly.
"""

from __future__ import annotations

import enum
import os

from sysext.core.errors import SysextError


class Architecture(enum.Enum):
    X86_64 = "x86-64"
    ARM64 = "arm64"
    X86 = "x86"
    ARM = "arm"
    PPC64_LE = "ppc64-le"
    S390X = "s390x"
    RISCV64 = "riscv64"
    LOONGARCH64 = "loongarch64"

    @property
    def systemd_name(self) -> str:
        return self.value

    @property
    def upstream_names(self) -> tuple[str, ...]:
        """Common spellings of this architecture in upstream release file names."""
        return _UPSTREAM_NAMES[self]

    @property
    def debian_name(self) -> str:
        return _DEBIAN_NAMES[self]

    @classmethod
    def from_uname(cls, machine: str | None = None) -> Architecture:
        machine = machine or os.uname().machine
        for arch, names in _UPSTREAM_NAMES.items():
            if machine in names:
                return arch
        raise SysextError(f"unsupported machine architecture {machine!r}")

    @classmethod
    def parse(cls, text: str) -> Architecture:
        """Accept the systemd name, or a common upstream spelling with a clear error."""
        for arch in cls:
            if text == arch.value:
                return arch
        for arch, names in _UPSTREAM_NAMES.items():
            if text in names:
                raise SysextError(
                    f"architecture {text!r} is not systemd's name for it",
                    f"use {arch.value!r} (systemd's ARCHITECTURE= and %a vocabulary)",
                )
        known = ", ".join(a.value for a in cls)
        raise SysextError(f"unknown architecture {text!r}", f"known: {known}")


_UPSTREAM_NAMES: dict[Architecture, tuple[str, ...]] = {
    Architecture.X86_64: ("x86_64", "amd64", "x64"),
    Architecture.ARM64: ("aarch64", "arm64"),
    Architecture.X86: ("i386", "i686", "386", "x86"),
    Architecture.ARM: ("armv7l", "armhf", "arm"),
    Architecture.PPC64_LE: ("ppc64le",),
    Architecture.S390X: ("s390x",),
    Architecture.RISCV64: ("riscv64",),
    Architecture.LOONGARCH64: ("loongarch64", "loong64"),
}

_DEBIAN_NAMES: dict[Architecture, str] = {
    Architecture.X86_64: "amd64",
    Architecture.ARM64: "arm64",
    Architecture.X86: "i386",
    Architecture.ARM: "armhf",
    Architecture.PPC64_LE: "ppc64el",
    Architecture.S390X: "s390x",
    Architecture.RISCV64: "riscv64",
    Architecture.LOONGARCH64: "loong64",
}

# Every architecture string systemd knows (spec §1.4), for linting ARCHITECTURE= values.
SYSTEMD_ARCHITECTURES: frozenset[str] = frozenset(
    (
        "x86-64",
        "x86",
        "arm64",
        "arm64-be",
        "arm",
        "arm-be",
        "alpha",
        "arc",
        "arc-be",
        "cris",
        "ia64",
        "loongarch64",
        "m68k",
        "mips64-le",
        "mips64",
        "mips-le",
        "mips",
        "nios2",
        "parisc64",
        "parisc",
        "ppc64-le",
        "ppc64",
        "ppc",
        "ppc-le",
        "riscv32",
        "riscv64",
        "s390x",
        "s390",
        "sh64",
        "sh",
        "sparc64",
        "sparc",
        "tilegx",
    )
)
