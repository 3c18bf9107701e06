"""The one error type users see, and its subclasses.

A `SysextError` is a user mistake or an environment problem the user can act on: the CLI
prints it as one line (`error: MESSAGE` + `hint: HINT`) and exits 2. Anything else that
escapes is a bug and keeps its traceback.
"""

from __future__ import annotations


class SysextError(Exception):
    """An error with a one-line message and an optional hint on what to do about it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ToolError(SysextError):
    """An external tool (mksquashfs, gpg, apt-get…) failed; carries its own message."""

    def __init__(self, tool: str, returncode: int, stderr: str, hint: str | None = None) -> None:
        last = _last_meaningful_line(stderr)
        message = f"{tool} failed (exit {returncode})" + (f": {last}" if last else "")
        super().__init__(message, hint)
        self.tool = tool
        self.returncode = returncode
        self.stderr = stderr


class ToolMissingError(SysextError):
    """An external tool is not installed."""

    def __init__(self, tool: str, package: str | None = None) -> None:
        hint = (
            f"install it with: apt-get install {package}"
            if package
            else "install it and make sure it is on PATH"
        )
        super().__init__(f"{tool}: command not found", hint)
        self.tool = tool


def _last_meaningful_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""
