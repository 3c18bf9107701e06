"""Help text that reads well at any terminal width.

Docstrings are wrapped near 88 columns in the source, and Typer's renderer keeps every
single line break of a paragraph before wrapping again at the terminal width; the result
was paragraphs cut into one- and two-word lines. `reflow` turns each paragraph back into
one line of running text and leaves alone what must keep its shape: indented lines
(command examples, lists written as code) and Click's `\\b` no-rewrap paragraphs. Every
command of the app passes through it once, in `reflow_app`, so a new command cannot
forget.
"""

from __future__ import annotations

import inspect
import os
import re
import textwrap

import typer
from rich.console import Console


def reflow(text: str, width: int) -> str:
    """Re-wrap each running-text paragraph for a terminal `width` columns wide; keep
    indented blocks verbatim.

    The first paragraph (the summary Typer shows in bold) is joined into one line and
    left to the renderer, which joins it anyway. The others are wrapped here, greedily
    and without a last line of one word, to `width` minus the renderer's margins, so
    the renderer finds nothing to wrap again.
    """
    paragraphs = inspect.cleandoc(text).split("\n\n")
    out = []
    for index, paragraph in enumerate(paragraphs):
        lines = paragraph.split("\n")
        if paragraph.startswith("\b") or any(line.startswith((" ", "\t")) for line in lines):
            out.append(_reflow_mixed(lines))
            continue
        joined = " ".join(line.strip() for line in lines)
        if index == 0:
            out.append(joined)
        elif joined.startswith("Example"):
            out.append(_example(joined, width))
        else:
            out.append("\n".join(_wrap(joined, width - MARGIN)))
    return "\n\n".join(out)


MARGIN = 2  # Typer pads help text by one column on each side


def _wrap(text: str, width: int) -> list[str]:
    """Greedy wrap whose last line never holds a single word (it takes one more)."""
    lines = textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False)
    if len(lines) >= 2 and " " not in lines[-1]:
        head, _, moved = lines[-2].rpartition(" ")
        if head:
            lines[-2:] = [head, f"{moved} {lines[-1]}"]
    return lines or [""]


def _example(paragraph: str, width: int) -> str:
    """ "Example (what it shows): COMMAND" becomes the sentence, then the command on its
    own indented line, so the command is never broken in the middle of running text."""
    if paragraph.startswith("Example ("):
        head, sep, command = paragraph.partition("): ")
        head += ")"
    elif paragraph.startswith("Example: "):
        head, sep, command = paragraph.partition(": ")
    else:
        return "\n".join(_wrap(paragraph, width - MARGIN))
    if not sep or not command:
        return "\n".join(_wrap(paragraph, width - MARGIN))
    return "\n".join([*_wrap(head + ":", width - MARGIN), *_command_lines(command)])


COMMAND_WIDTH = 70  # fits an 80-column terminal with the indent and a continuation mark


def _command_lines(command: str) -> list[str]:
    """A long command split at words (quoted words kept whole) with shell continuations,
    so it stays copyable and no line of it ends up holding one stray word."""
    words = re.findall(r"(?:'[^']*'|\"[^\"]*\"|\S)+", command)
    units: list[str] = []  # an option stays on one line with its value
    for word in words:
        # (and a redirection with its file)
        opens = units and (units[-1].startswith("-") or units[-1] in (">", ">>", "<", "|"))
        if opens and " " not in units[-1] and word[0] != "-":
            units[-1] += " " + word
        else:
            units.append(word)
    lines: list[str] = []
    current = ""
    for word in units:
        if current and len(current) + 1 + len(word) > COMMAND_WIDTH:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}" if current else word
    lines.append(current)
    return [
        ("    " if i == 0 else "      ") + line + (" \\" if i < len(lines) - 1 else "")
        for i, line in enumerate(lines)
    ]


def _reflow_mixed(lines: list[str]) -> str:
    """A paragraph holding code: prose lines before the first indented line are joined,
    indented lines (and everything of a `\\b` paragraph) stay as they are."""
    if lines[0].startswith("\b"):
        return "\n".join(lines)
    prose: list[str] = []
    rest: list[str] = []
    for index, line in enumerate(lines):
        if line.startswith((" ", "\t")):
            rest = lines[index:]
            break
        prose.append(line.strip())
    head = " ".join(prose)
    code = [
        wrapped
        for line in rest
        for wrapped in (_command_lines(line.strip()) if len(line) > COMMAND_WIDTH + 4 else [line])
    ]
    return "\n".join(([head] if head else []) + code)


def help_width() -> int:
    """The width Typer's renderer will use: TERMINAL_WIDTH, else what rich finds
    (COLUMNS, the terminal, or 80 when writing to a pipe).

    typer.rich_utils reads TERMINAL_WIDTH the same way (its MAX_WIDTH); it is not imported
    for it because it pulls in rich's tables and markdown, which every command would then
    pay for although only --help renders with them.
    """
    terminal_width = os.environ.get("TERMINAL_WIDTH")
    return (int(terminal_width) if terminal_width else None) or Console().width


def reflow_app(app: typer.Typer, width: int | None = None) -> None:
    """Reflow the help of `app`, its commands and its sub-apps, recursively."""
    width = width or help_width()
    if isinstance(app.info.help, str):
        app.info.help = reflow(app.info.help, width)
    for command in app.registered_commands:
        text = command.help or (inspect.getdoc(command.callback) if command.callback else None)
        if text:
            command.help = reflow(text, width)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            reflow_app(group.typer_instance, width)
        if isinstance(group.help, str):
            group.help = reflow(group.help, width)
