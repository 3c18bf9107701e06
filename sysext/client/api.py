"""HTTP client for a sysext registry's write API (`/api/v1`), used by the CLI.

Uploads stream the file from disk (never read whole into memory) with a progress bar and
are retried on connection errors and 5xx: the server treats identical bytes as an
idempotent re-publish, so a retry after a lost response is safe.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sysext.core.errors import SysextError

if TYPE_CHECKING:
    import requests

CHUNK = 1 << 20
TOKEN_ENV = "SYSEXT_TOKEN"
REGISTRY_ENV = "SYSEXT_REGISTRY"

_HINTS = {
    401: f"set {TOKEN_ENV} to a token from `sysext token create` (or the server's "
    "SYSEXT_ADMIN_TOKEN)",
    403: "use a token whose --scope covers this extension, or the admin token",
    404: "check the extension name and version (`curl REGISTRY/api/v1/extensions`)",
    409: "published versions are immutable: build and publish a new version",
    413: "raise the server's limit (SYSEXT_MAX_UPLOAD_BYTES or --max-upload)",
    422: "fix the image or the name; `sysext validate IMAGE` shows what hosts would reject",
}


class _ProgressFile:
    """A file object requests can stream with a Content-Length, reporting progress."""

    def __init__(self, handle: IO[bytes], size: int, advance: Callable[[int], None]) -> None:
        self._handle = handle
        self._size = size
        self._advance = advance

    def __len__(self) -> int:
        return self._size

    def read(self, amount: int = -1) -> bytes:
        data = self._handle.read(CHUNK if amount is None or amount < 0 else max(amount, CHUNK))
        self._advance(len(data))
        return data


@dataclass(frozen=True)
class RegistryClient:
    base_url: str
    token: str | None = None
    attempts: int = 3
    timeout: float = 60.0

    @classmethod
    def from_env(cls, registry: str | None, *, need_token: bool = True) -> RegistryClient:
        url = registry or os.environ.get(REGISTRY_ENV)
        if not url:
            raise SysextError("no registry given", f"pass --registry URL or set {REGISTRY_ENV}")
        if not url.startswith(("http://", "https://")):
            raise SysextError(f"invalid registry URL {url!r}", "use http://HOST:PORT or https://…")
        token = os.environ.get(TOKEN_ENV) or None
        if need_token and token is None:
            raise SysextError(f"{TOKEN_ENV} is not set", _HINTS[401])
        return cls(url.rstrip("/"), token)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def _fail(self, response: requests.Response) -> SysextError:
        try:
            detail = str(response.json().get("detail"))
        except ValueError:
            detail = response.text.strip().splitlines()[0] if response.text.strip() else ""
        return SysextError(
            f"registry answered {response.status_code}: {detail or response.reason}",
            _HINTS.get(response.status_code),
        )

    def request(
        self,
        method: str,
        path: str,
        *,
        body_factory: Callable[[], Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Send a request, retrying connection failures and 5xx; return the JSON body."""
        # Imported here: the CLI imports this module to build its commands, and requests
        # costs every command a tenth of a second even when it never talks to a registry.
        import requests

        url = f"{self.base_url}/api/v1/{path}"
        delay = 1.0
        for attempt in range(1, self.attempts + 1):
            try:
                data = body_factory() if body_factory else None
                response = requests.request(
                    method, url, headers=self._headers(), data=data, timeout=self.timeout, **kwargs
                )
            except requests.ConnectionError as exc:
                if attempt == self.attempts:
                    raise SysextError(
                        f"cannot reach the registry at {self.base_url}: {type(exc).__name__}",
                        "is `sysext serve` running there? check --registry / SYSEXT_REGISTRY",
                    ) from None
            except requests.Timeout:
                if attempt == self.attempts:
                    raise SysextError(
                        f"the registry at {self.base_url} did not answer in {self.timeout:.0f} s"
                    ) from None
            else:
                if response.status_code < 400:
                    return response.json()
                if response.status_code < 500 or attempt == self.attempts:
                    raise self._fail(response)
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    def upload(
        self, path: Path, name: str, channel: str, advance: Callable[[int], None]
    ) -> dict[str, Any]:
        size = path.stat().st_size
        handles: list[IO[bytes]] = []

        def body() -> _ProgressFile:
            for old in handles:
                old.close()
            handle = open(path, "rb")  # noqa: SIM115 (closed below, reopened per retry)
            handles.append(handle)
            return _ProgressFile(handle, size, advance)

        try:
            result: dict[str, Any] = self.request(
                "PUT",
                f"extensions/{name}/images/{path.name}",
                body_factory=body,
                params={"channel": channel},
            )
        finally:
            for handle in handles:
                handle.close()
        return result
