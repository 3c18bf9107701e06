"""User settings of the builder: where the download cache lives and which mirrors apply.

Sources, highest priority first: command-line options, environment variables
(`SYSEXT_CACHE_DIR`, `SYSEXT_MIRRORS`), the config file (`$SYSEXT_CONFIG`, else
`$XDG_CONFIG_HOME/sysext/config.toml`), then XDG defaults. The config file looks like:

    cache_dir = "/var/cache/sysext"
    [mirrors]
    "https://github.com/" = "https://mirror.example/github/"
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sysext.core.errors import SysextError
from sysext.core.mirrors import MirrorMap, mirror_map_from_table, parse_mirror_spec

_KNOWN_KEYS = frozenset({"cache_dir", "mirrors"})


@dataclass(frozen=True)
class Settings:
    cache_dir: Path
    mirrors: MirrorMap = field(default_factory=MirrorMap)


def config_file_path(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get("SYSEXT_CONFIG"):
        return Path(env["SYSEXT_CONFIG"])
    base = env.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "sysext" / "config.toml"


def default_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    base = env.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "sysext"


def load_settings(
    *, cache_dir: Path | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Settings from options, environment and config file (see the module docstring)."""
    env = os.environ if env is None else env
    path = config_file_path(env)
    table: dict[str, object] = {}
    if path.is_file():
        try:
            table = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SysextError(f"config {path}: {exc}", "fix the TOML syntax") from exc
        unknown = sorted(set(table) - _KNOWN_KEYS)
        if unknown:
            raise SysextError(
                f"config {path}: unknown key {unknown[0]!r}",
                f"known keys: {', '.join(sorted(_KNOWN_KEYS))}",
            )
    mirrors = MirrorMap()
    if "mirrors" in table:
        mirrors = mirror_map_from_table(table["mirrors"], source=f"config {path}")
    if env.get("SYSEXT_MIRRORS"):
        mirrors = parse_mirror_spec(env["SYSEXT_MIRRORS"], source="SYSEXT_MIRRORS").merged_over(
            mirrors
        )
    chosen = cache_dir
    if chosen is None and env.get("SYSEXT_CACHE_DIR"):
        chosen = Path(env["SYSEXT_CACHE_DIR"])
    if chosen is None and "cache_dir" in table:
        value = table["cache_dir"]
        if not isinstance(value, str) or not value:
            raise SysextError(f"config {path}: cache_dir: expected a path string, got {value!r}")
        chosen = Path(value).expanduser()
    return Settings(cache_dir=chosen or default_cache_dir(env), mirrors=mirrors)
