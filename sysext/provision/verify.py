"""Check a generated config the way Ignition will: fetch every source, compare its hash.

Works on an Ignition document and on a Butane document alike (both keep remote files as
`storage.files[].contents.source` + `verification.hash`), so users can check what they are
about to hand to a fleet: `sysext verify-config host.ign`.
"""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
import yaml

from sysext import __version__
from sysext.core.errors import SysextError

_CHUNK = 1 << 20


@dataclass(frozen=True)
class SourceCheck:
    path: str
    source: str
    sha256: str
    size: int
    verified: bool  # False: the config has no verification.hash for this (inline) source


def load_config(path: Path) -> Mapping[str, Any]:
    """Parse an Ignition (.ign/.json) or Butane (.bu/.yaml) file."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SysextError(f"cannot read {path}: {exc.strerror}") from None
    try:
        document = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise SysextError(
            f"{path}: not valid JSON or YAML: {first}", "pass an Ignition or Butane file"
        ) from None
    if not isinstance(document, dict):
        raise SysextError(f"{path}: not an Ignition or Butane document (no top-level mapping)")
    return document


def _files(document: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    storage = document.get("storage") or {}
    for entry in storage.get("files") or []:
        contents = entry.get("contents") or {}
        if isinstance(contents, Mapping) and contents.get("source"):
            yield str(entry.get("path")), contents


def _expected(path: str, contents: Mapping[str, Any]) -> str | None:
    hash_ = (contents.get("verification") or {}).get("hash")
    if hash_ is None:
        return None
    algorithm, _, digest = str(hash_).partition("-")
    if algorithm != "sha256" or len(digest) != 64:
        raise SysextError(
            f"{path}: verification.hash {hash_!r} is not sha256-<64 hex digits>",
            "regenerate the config with `sysext butane`",
        )
    return digest.lower()


def _data_url_bytes(url: str) -> bytes:
    header, sep, payload = url[len("data:") :].partition(",")
    if not sep:
        raise SysextError(f"malformed data: URL {url[:40]!r}…")
    if header.endswith(";base64"):
        return base64.b64decode(payload)
    return urllib.parse.unquote_to_bytes(payload)


def _digest_remote(session: requests.Session, url: str, path: str) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    try:
        with session.get(url, stream=True, timeout=60) as response:
            if response.status_code != 200:
                raise SysextError(
                    f"{path}: GET {url}: HTTP {response.status_code}",
                    "Ignition would fail the boot on this file; is the version still published?",
                )
            for block in response.iter_content(_CHUNK):
                digest.update(block)
                size += len(block)
    except requests.RequestException as exc:
        raise SysextError(
            f"{path}: cannot download {url}: {type(exc).__name__}",
            "check that hosts can reach the registry URL written into the config",
        ) from None
    return digest.hexdigest(), size


def verify_config_sources(document: Mapping[str, Any]) -> list[SourceCheck]:
    """Download every file source of `document` and check it against verification.hash.

    Raises SysextError on the first mismatch, unreachable source, or remote source without a
    hash (Ignition would install such a file unverified).
    """
    session = requests.Session()
    session.headers["User-Agent"] = f"sysext/{__version__}"
    checks: list[SourceCheck] = []
    for path, contents in _files(document):
        source = str(contents["source"])
        expected = _expected(path, contents)
        scheme = urllib.parse.urlsplit(source).scheme
        if scheme == "data":
            data = _data_url_bytes(source)
            actual, size = hashlib.sha256(data).hexdigest(), len(data)
        elif scheme in ("http", "https"):
            if expected is None:
                raise SysextError(
                    f"{path}: {source} is downloaded without verification.hash",
                    "a tampered or truncated download would be installed as is; "
                    "regenerate the config with `sysext butane`",
                )
            actual, size = _digest_remote(session, source, path)
        else:
            raise SysextError(f"{path}: unsupported source scheme {scheme!r} in {source}")
        if expected is not None and actual != expected:
            raise SysextError(
                f"{path}: {source} has sha256 {actual}, the config expects {expected}",
                "the registry's file changed since the config was generated; regenerate it",
            )
        checks.append(SourceCheck(path, source, actual, size, expected is not None))
    return checks
