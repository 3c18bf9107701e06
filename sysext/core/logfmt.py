"""One `key=value` log field, escaped so that no value can end a line or forge a field.

The registry's logs are `key=value` lines read by people and by log pipelines. A value
from a client (a path, an X-Forwarded-For address, a token description) must never add
a field (`x level=ERROR event=extension-broken`) or a line (a decoded `%0A`): values
holding spaces, quotes, `=` or anything unprintable are quoted, and unprintable
characters written as `\\xNN`/`\\uNNNN`.
"""

from __future__ import annotations


def log_value(value: object) -> str:
    """`value` as one log field value; plain words stay as they are (the common case)."""
    text = str(value)
    # str methods, not a per-character generator: this runs once per request.
    if text.isprintable() and " " not in text and '"' not in text and "=" not in text:
        return text if text else '""'
    escaped = text.replace("\\", "\\\\").replace('"', '\\"')
    if not escaped.isprintable():
        escaped = "".join(c if c.isprintable() else _escape(c) for c in escaped)
    return '"' + escaped + '"'


def _escape(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
