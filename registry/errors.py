"""The registry's HTTP error: a status code and a one-line reason for the client."""

from __future__ import annotations


class RegistryError(Exception):
    """Raised anywhere in a request; the app answers `status` with {"detail": detail}."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
