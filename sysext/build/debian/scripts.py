"""Which maintainer scripts may be left unrun. sysext never runs them.

dpkg runs `preinst install` and `postinst configure` (and `config configure` for debconf)
when a package is installed for the first time; an extension gets no such moment. So
each of these scripts is read, statically, along the path a first installation takes:

- `if`/`elif`, `&&`/`||` and `case "$1" in` branches whose conditions are decided by the
  script's arguments (`[ "$1" = upgrade ]`, `[ -z "$2" ]`, `test -n "$2"`,
  `dpkg --compare-versions "$2" lt-nl 1.2`) are followed only where a first installation
  goes; conditions that depend on the machine (`getent`, `[ -d /run/systemd/system ]`)
  count both ways;
- every command on that path is classified: shell builtins and queries (`echo`, `test`,
  `getent`, `dpkg --compare-versions`, `readlink`…) do nothing; a few commands are known to
  be harmless to skip for an extension (HARMLESS: `ldconfig`, whose cache the default
  search path makes unneeded, `dpkg-maintscript-helper`, which acts on upgrades only,
  cache rebuilds, and `systemd-tmpfiles` on files the package ships, which systemd applies
  after the merge at boot); everything else — adding users, enabling services,
  `update-alternatives`, debconf, loading AppArmor profiles, writing files — is an
  *effect* the extension would silently lack.

A package whose first-install path has effects is refused with one line naming them, unless
the recipe lists it in `skip_scripts` (its author checked the package works without them,
and ships what it needs otherwise, e.g. a sysusers.d file and a unit applying it).
`prerm`/`postrm` run only on removal and are not read. Pure: no I/O, nothing is executed.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

from sysext.build.debian.version import compare

# The scripts of a first installation, with the arguments dpkg passes them.
FIRST_INSTALL: dict[str, tuple[str, str]] = {
    "preinst": ("install", ""),
    "config": ("configure", ""),
    "postinst": ("configure", ""),
}

# Commands that change nothing (builtins, queries, text tools on pipes).
NO_EFFECT = frozenset(
    {
        ":", "true", "false", "set", "shift", "exit", "return", "echo", "printf", "test",
        "[", "[[", "local", "export", "unset", "readonly", "break", "continue", "wait",
        "trap", "getent", "which", "type", "readlink", "realpath", "basename", "dirname",
        "cat", "grep", "egrep", "fgrep", "head", "tail", "cut", "tr", "sort", "uniq", "wc",
        "id", "uname", "expr", "seq", "sleep", "stat", "ls", "pidof", "ischroot",
        "aa-enabled", "systemd-detect-virt", "running-in-container", "dpkg-query",
        "dpkg-architecture", "awk", "mawk", "gawk", "cmp", "diff", "md5sum", "sha256sum",
        "eval", "getopts", "read", "cd", "pwd", "logger",
    }
)  # fmt: skip

# Commands that act, but whose action an extension does not need (or gets at boot).
HARMLESS: dict[str, str] = {
    "ldconfig": "refreshes the linker cache (the default search path finds the libraries)",
    "dpkg-maintscript-helper": "moves or removes conffiles of older versions (upgrades only)",
    "dpkg-trigger": "tells other packages' triggers",
    "update-mime-database": "rebuilds a cache",
    "update-desktop-database": "rebuilds a cache",
    "gtk-update-icon-cache": "rebuilds a cache",
    "update-icon-caches": "rebuilds a cache",
    "install-info": "updates the info directory",
    "mandb": "rebuilds the manual page index",
    "fc-cache": "rebuilds the font cache",
    "glib-compile-schemas": "rebuilds a cache",
    # systemd-tmpfiles-setup.service runs after the merge at boot, so the package's own
    # tmpfiles.d file is applied then (systemd-sysusers.service runs before it: users are
    # an effect, below).
    "systemd-tmpfiles": "creates files from the package's tmpfiles.d file (systemd does at boot)",
}

# What refused commands do, for the error message.
EFFECTS: dict[str, str] = {
    "adduser": "creates a user or group",
    "addgroup": "creates a user or group",
    "useradd": "creates a user or group",
    "groupadd": "creates a user or group",
    "usermod": "changes a user",
    "systemd-sysusers": "creates users (sysusers.d of an extension is not applied at boot)",
    "add-shell": "adds a login shell to /etc/shells",
    "update-alternatives": "registers an alternative (a /etc/alternatives link)",
    "deb-systemd-helper": "enables a service",
    "deb-systemd-invoke": "starts a service",
    "systemctl": "enables or starts a service",
    "invoke-rc.d": "starts a service",
    "update-rc.d": "enables an init script",
    "apparmor_parser": "loads an AppArmor profile",
    "dpkg-statoverride": "sets owner or mode of a file",
    "dpkg-divert": "diverts a file of another package",
    "setcap": "sets file capabilities",
    "chown": "changes owners",
    "chgrp": "changes owners",
    "chmod": "changes modes",
    "ucf": "manages a configuration file",
    "ucfr": "manages a configuration file",
    ".": "uses debconf or another sourced script",
    "source": "uses debconf or another sourced script",
    "update-ca-certificates": "updates the certificate store",
    "mkdir": "creates directories",
    "ln": "creates links",
    "rm": "removes files",
    "mv": "moves files",
    "cp": "copies files",
    "install": "installs files",
    "touch": "creates files",
}


@dataclass(frozen=True)
class Effect:
    script: str  # preinst, postinst, config
    command: str
    what: str

    def __str__(self) -> str:
        return f"{self.script} runs {self.command} ({self.what})"


# -- tokens ----------------------------------------------------------------------------------

_OPERATORS = ("&&", "||", ";;", ";", "&", "|", "(", ")", "\n")
_REDIRECT = re.compile(r"\d*(>>|>&|<&|>|<)")


@dataclass(frozen=True)
class Token:
    text: str  # the word after quote removal (operators: the operator)
    operator: bool = False
    quoted: bool = False
    substitutions: tuple[str, ...] = ()  # the scripts inside $( ) and ` `
    assignment: bool = False  # NAME=value (the name unquoted)


class _Lexer:
    def __init__(self, text: str) -> None:
        self.text = text
        self.i = 0
        self.heredocs: list[str] = []

    def tokens(self) -> list[Token]:
        out: list[Token] = []
        text = self.text
        while self.i < len(text):
            c = text[self.i]
            if c == "\\" and text[self.i : self.i + 2] == "\\\n":
                self.i += 2
                continue
            if c in " \t\r":
                self.i += 1
                continue
            if c == "#":
                end = text.find("\n", self.i)
                self.i = len(text) if end < 0 else end
                continue
            if c == "\n":
                out.append(Token("\n", operator=True))
                self.i += 1
                for delimiter in self.heredocs:
                    self._skip_heredoc(delimiter)
                self.heredocs = []
                continue
            operator = next((op for op in _OPERATORS if text.startswith(op, self.i)), None)
            if operator is not None:
                out.append(Token(operator, operator=True))
                self.i += len(operator)
                continue
            if text.startswith("<<", self.i):
                self.i += 2 + (text[self.i + 2 : self.i + 3] == "-")
                while self.i < len(text) and text[self.i] in " \t":
                    self.i += 1
                word = self._word()
                self.heredocs.append(word.text)
                continue
            out.append(self._word())
        return out

    def _skip_heredoc(self, delimiter: str) -> None:
        while self.i < len(self.text):
            end = self.text.find("\n", self.i)
            line = self.text[self.i : len(self.text) if end < 0 else end]
            self.i = len(self.text) if end < 0 else end + 1
            if line.strip() == delimiter:
                return

    def _word(self) -> Token:
        text = self.text
        value: list[str] = []
        quoted = False
        subs: list[str] = []
        plain_prefix: str | None = None  # what came before the first quote
        while self.i < len(text):
            c = text[self.i]
            if c == "&" and value and value[-1] and value[-1][-1] in "<>":
                value.append(c)  # `2>&1`, `>&2`: a redirection, not `&`
                self.i += 1
                continue
            if c in " \t\r\n;&|()":
                break
            if c in "'\"`$" and plain_prefix is None and c != "$":
                plain_prefix = "".join(value)
            if c == "\\":
                value.append(text[self.i + 1 : self.i + 2])
                self.i += 2
            elif c == "'":
                end = text.find("'", self.i + 1)
                end = len(text) if end < 0 else end
                value.append(text[self.i + 1 : end])
                self.i = end + 1
                quoted = True
            elif c == '"':
                self.i += 1
                while self.i < len(text) and text[self.i] != '"':
                    if text[self.i] == "\\" and self.i + 1 < len(text):
                        value.append(text[self.i + 1])
                        self.i += 2
                    elif text.startswith("$(", self.i):
                        subs.append(self._substitution())
                        value.append("$(…)")
                    elif text[self.i] == "`":
                        subs.append(self._backtick())
                        value.append("$(…)")
                    else:
                        value.append(text[self.i])
                        self.i += 1
                self.i += 1
                quoted = True
            elif text.startswith("$(", self.i):
                subs.append(self._substitution())
                value.append("$(…)")
            elif c == "`":
                subs.append(self._backtick())
                value.append("$(…)")
            else:
                value.append(c)
                self.i += 1
        word = "".join(value)
        prefix = word if plain_prefix is None else plain_prefix
        assignment = re.match(r"[A-Za-z_][A-Za-z0-9_]*=", prefix) is not None
        return Token(word, quoted=quoted, substitutions=tuple(subs), assignment=assignment)

    def _substitution(self) -> str:
        """`$( … )` from its `$`: the inner script (parentheses balanced)."""
        start = self.i + 2
        depth = 1
        j = start
        while j < len(self.text) and depth:
            if self.text[j] == "(":
                depth += 1
            elif self.text[j] == ")":
                depth -= 1
            j += 1
        self.i = j
        return self.text[start : j - 1]

    def _backtick(self) -> str:
        end = self.text.find("`", self.i + 1)
        end = len(self.text) if end < 0 else end
        inner = self.text[self.i + 1 : end]
        self.i = end + 1
        return inner


# -- syntax ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Simple:
    words: tuple[Token, ...]
    redirects: tuple[str, ...]  # targets of output redirections


@dataclass(frozen=True)
class AndOr:
    first: Node
    rest: tuple[tuple[str, Node], ...]  # ("&&" | "||", pipeline)


@dataclass(frozen=True)
class Pipeline:
    negated: bool
    commands: tuple[Node, ...]


@dataclass(frozen=True)
class If:
    branches: tuple[tuple[Node, Node], ...]  # (condition list, body list)
    otherwise: Node | None


@dataclass(frozen=True)
class Case:
    word: Token
    arms: tuple[tuple[tuple[str, ...], Node], ...]


@dataclass(frozen=True)
class Loop:
    body: Node  # for/while/until: the body may run (conditions are analysed as commands)
    head: Node | None = None


@dataclass(frozen=True)
class Sequence_:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Function:
    name: str
    body: Node


Node = Simple | AndOr | Pipeline | If | Case | Loop | Sequence_ | Function


class ScriptSyntaxError(ValueError):
    pass


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.i = 0

    def peek(self) -> Token | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def next(self) -> Token:
        token = self.peek()
        if token is None:
            raise ScriptSyntaxError("unexpected end of script")
        self.i += 1
        return token

    def is_word(self, *words: str) -> bool:
        token = self.peek()
        return (
            token is not None and not token.operator and not token.quoted and (token.text in words)
        )

    def is_op(self, *ops: str) -> bool:
        token = self.peek()
        return token is not None and token.operator and token.text in ops

    def skip_newlines(self) -> None:
        while self.is_op("\n", ";"):
            self.i += 1

    def expect_word(self, word: str) -> None:
        self.skip_newlines()
        if not self.is_word(word):
            found = self.peek()
            raise ScriptSyntaxError(f"expected {word!r}, got {found.text if found else 'end'!r}")
        self.i += 1

    def parse_list(self, stop: frozenset[str] = frozenset()) -> Sequence_:
        items: list[Node] = []
        while True:
            self.skip_newlines()
            token = self.peek()
            if token is None or (not token.operator and not token.quoted and token.text in stop):
                break
            if token.operator and token.text in (")", ";;"):
                break
            items.append(self.parse_and_or())
            if self.is_op("&"):
                self.i += 1
        return Sequence_(tuple(items))

    def parse_and_or(self) -> Node:
        first = self.parse_pipeline()
        rest: list[tuple[str, Node]] = []
        while self.is_op("&&", "||"):
            op = self.next().text
            while self.is_op("\n"):
                self.i += 1
            rest.append((op, self.parse_pipeline()))
        return AndOr(first, tuple(rest)) if rest else first

    def parse_pipeline(self) -> Node:
        negated = False
        if self.is_word("!"):
            self.i += 1
            negated = True
        commands = [self.parse_command()]
        while self.is_op("|"):
            self.i += 1
            while self.is_op("\n"):
                self.i += 1
            commands.append(self.parse_command())
        if not negated and len(commands) == 1:
            return commands[0]
        return Pipeline(negated, tuple(commands))

    def parse_command(self) -> Node:
        if self.is_word("if"):
            return self.parse_if()
        if self.is_word("case"):
            return self.parse_case()
        if self.is_word("for"):
            self.i += 1
            while not (self.is_word("do") or self.peek() is None):
                self.i += 1
            self.expect_word("do")
            body = self.parse_list(frozenset({"done"}))
            self.expect_word("done")
            return Loop(body)
        if self.is_word("while", "until"):
            self.i += 1
            head = self.parse_list(frozenset({"do"}))
            self.expect_word("do")
            body = self.parse_list(frozenset({"done"}))
            self.expect_word("done")
            return Loop(body, head)
        if self.is_word("{"):
            self.i += 1
            body = self.parse_list(frozenset({"}"}))
            self.expect_word("}")
            return body
        if self.is_op("("):
            self.i += 1
            body = self.parse_list()
            if not self.is_op(")"):
                raise ScriptSyntaxError("unclosed (")
            self.i += 1
            return body
        return self.parse_simple()

    def parse_simple(self) -> Node:
        words: list[Token] = []
        redirects: list[str] = []
        while True:
            token = self.peek()
            if token is None or token.operator:
                # `name() { … }`: a function definition
                if (
                    token is not None
                    and token.text == "("
                    and len(words) == 1
                    and self.i + 1 < len(self.tokens)
                    and self.tokens[self.i + 1].text == ")"
                ):
                    self.i += 2
                    self.skip_newlines()
                    return Function(words[0].text, self.parse_command())
                break
            self.i += 1
            redirect = _REDIRECT.match(token.text) if not token.quoted else None
            if redirect is not None:
                target = token.text[redirect.end() :]
                following = self.peek()
                if not target and following is not None and not following.operator:
                    target = self.next().text
                # `>file` and `>>file` write; `>&2`, `2>&1` and input redirections do not.
                if ">" in redirect.group(1) and "&" not in redirect.group(1):
                    redirects.append(target)
                continue
            words.append(token)
        if not words and not redirects:
            found = self.peek()
            raise ScriptSyntaxError(f"unexpected {found.text if found else 'end'!r}")
        return Simple(tuple(words), tuple(redirects))

    def parse_if(self) -> If:
        self.i += 1
        branches: list[tuple[Node, Node]] = []
        condition = self.parse_list(frozenset({"then"}))
        self.expect_word("then")
        body = self.parse_list(frozenset({"elif", "else", "fi"}))
        branches.append((condition, body))
        otherwise: Node | None = None
        while True:
            self.skip_newlines()
            if self.is_word("elif"):
                self.i += 1
                condition = self.parse_list(frozenset({"then"}))
                self.expect_word("then")
                body = self.parse_list(frozenset({"elif", "else", "fi"}))
                branches.append((condition, body))
            elif self.is_word("else"):
                self.i += 1
                otherwise = self.parse_list(frozenset({"fi"}))
            else:
                break
        self.expect_word("fi")
        return If(tuple(branches), otherwise)

    def parse_case(self) -> Case:
        self.i += 1
        word = self.next()
        self.expect_word("in")
        arms: list[tuple[tuple[str, ...], Node]] = []
        while True:
            self.skip_newlines_only()
            if self.is_word("esac"):
                self.i += 1
                break
            if self.is_op("("):
                self.i += 1
            patterns = [self.next().text]
            while self.is_op("|"):
                self.i += 1
                patterns.append(self.next().text)
            if not self.is_op(")"):
                raise ScriptSyntaxError("expected ) after a case pattern")
            self.i += 1
            body = self.parse_list(frozenset({"esac"}))
            arms.append((tuple(patterns), body))
            if self.is_op(";;"):
                self.i += 1
        return Case(word, tuple(arms))

    def skip_newlines_only(self) -> None:
        while self.is_op("\n"):
            self.i += 1


def parse_script(text: str) -> Sequence_:
    parser = _Parser(_Lexer(text).tokens())
    tree = parser.parse_list()
    if parser.peek() is not None:
        raise ScriptSyntaxError(f"unexpected {parser.tokens[parser.i].text!r}")
    return tree


# -- evaluation along a first installation ----------------------------------------------------

# Tri-state truth: True, False, or None (depends on the machine).
Truth = bool | None


def _value(token: Token, args: Mapping[str, str]) -> str | None:
    """A word's value when it depends only on the script's arguments, else None."""
    text = token.text
    for name, value in args.items():
        for spelling in (f"${{{name}}}", f"${name}"):
            text = text.replace(spelling, value)
    return None if "$" in text or "`" in text else text


_COMPARE_OPS = {
    "lt": "<<", "le": "<=", "eq": "=", "ne": "!=", "ge": ">=", "gt": ">>",
    "<<": "<<", "<=": "<=", "=": "=", ">=": ">=", ">>": ">>", "<": "<=", ">": ">=",
}  # fmt: skip


def _compare_versions(a: str, op: str, b: str) -> Truth:
    """`dpkg --compare-versions A OP B`, with dpkg's rules for an empty version: earlier
    than any for lt/le/eq/ne/ge/gt, later than any for the `-nl` forms."""
    not_less = op.endswith("-nl")
    base = _COMPARE_OPS.get(op.removesuffix("-nl"))
    if base is None:
        return None
    if not a or not b:
        if not a and not b:
            c = 0
        elif not a:
            c = 1 if not_less else -1
        else:
            c = -1 if not_less else 1
    else:
        c = compare(a, b)
    return {
        "<<": c < 0, "<=": c <= 0, "=": c == 0, "!=": c != 0, ">=": c >= 0, ">>": c > 0,
    }[base]  # fmt: skip


def _test(words: list[str | None]) -> Truth:
    """`[ … ]` / `test …` over argument-only values; None when it looks at the machine."""
    if words and words[0] == "!":
        inner = _test(words[1:])
        return None if inner is None else not inner
    for joiner in ("-o", "-a"):
        if joiner in words:
            index = words.index(joiner)
            left, right = _test(words[:index]), _test(words[index + 1 :])
            if joiner == "-o":
                return True if True in (left, right) else (None if None in (left, right) else False)
            return False if False in (left, right) else (None if None in (left, right) else True)
    if len(words) == 3 and words[1] in ("=", "==", "!="):
        if words[0] is None or words[2] is None:
            return None
        equal = words[0] == words[2]
        return equal if words[1] != "!=" else not equal
    if len(words) == 2 and words[0] in ("-z", "-n"):
        if words[1] is None:
            return None
        return (words[1] == "") == (words[0] == "-z")
    if len(words) == 1:
        return None if words[0] is None else words[0] != ""
    return None


class _Analyser:
    def __init__(self, script: str, args: Mapping[str, str]) -> None:
        self.script = script
        self.args = args
        self.functions: dict[str, Node] = {}
        self.calling: set[str] = set()
        self.effects: list[Effect] = []

    def effect(self, command: str, what: str) -> None:
        found = Effect(self.script, command, what)
        if found not in self.effects:
            self.effects.append(found)

    def run(self, node: Node) -> Truth:
        """Note the effects of `node` on a first installation; return its exit status as
        truth (True: success) where the arguments decide it."""
        if isinstance(node, Sequence_):
            result: Truth = True
            for item in node.items:
                result = self.run(item)
            return result
        if isinstance(node, AndOr):
            result = self.run(node.first)
            for op, item in node.rest:
                if op == "&&":
                    if result is False:
                        continue
                    right = self.run(item)
                    result = right if result is True else (False if right is False else None)
                else:
                    if result is True:
                        continue
                    right = self.run(item)
                    result = right if result is False else (True if right is True else None)
            return result
        if isinstance(node, Pipeline):
            result = None
            for item in node.commands:
                result = self.run(item)
            if node.negated and result is not None:
                return not result
            return None if len(node.commands) > 1 else result
        if isinstance(node, If):
            for condition, body in node.branches:
                truth = self.run(condition)
                if truth is False:
                    continue
                self.run(body)
                if truth is True:
                    return None
            if node.otherwise is not None:
                self.run(node.otherwise)
            return None
        if isinstance(node, Case):
            value = _value(node.word, self.args)
            for patterns, body in node.arms:
                if value is None:
                    self.run(body)
                    continue
                if any(_glob(pattern, value) for pattern in patterns):
                    self.run(body)
                    break
            return None
        if isinstance(node, Loop):
            if node.head is not None:
                self.run(node.head)
            self.run(node.body)
            return None
        if isinstance(node, Function):
            self.functions[node.name] = node.body
            return True
        return self.simple(node)

    def simple(self, node: Simple) -> Truth:
        for target in node.redirects:
            if target not in ("/dev/null",) and not target.startswith("&"):
                self.effect(f"> {target}", "writes a file")
        for token in node.words:
            for inner in token.substitutions:
                self._nested(inner)
        words = list(node.words)
        while words and words[0].assignment:
            words.pop(0)  # `X=1 cmd`: an environment for cmd; `X=1` alone sets a variable
        if not words:
            return True
        name = words[0].text.rsplit("/", 1)[-1] if not words[0].quoted else words[0].text
        rest = words[1:]
        if name in ("exec", "command", "nohup", "env") and rest:
            if name == "command" and rest[0].text in ("-v", "-V"):
                return None
            return self.simple(Simple(tuple(rest), ()))
        if name in ("[", "test", "[["):
            values = [_value(t, self.args) for t in rest]
            if values and values[-1] in ("]", "]]"):
                values = values[:-1]
            return _test(values)
        if name == "true" or name == ":":
            return True
        if name == "false":
            return False
        if name in self.functions:
            if name not in self.calling:
                self.calling.add(name)
                self.run(self.functions[name])
                self.calling.discard(name)
            return None
        if name == "dpkg":
            if len(rest) >= 4 and rest[0].text == "--compare-versions":
                a, op, b = (_value(t, self.args) for t in rest[1:4])
                if a is None or op is None or b is None:
                    return None
                return _compare_versions(a, op, b)
            if rest and rest[0].text.startswith(
                ("--print-", "--assert-", "-s", "--status", "-L", "--listfiles", "-l", "--list")
            ):
                return None
            self.effect("dpkg " + (rest[0].text if rest else ""), "changes the package database")
            return None
        if name == "update-alternatives":
            # Removing or asking about an alternative changes nothing on a first install.
            actions = {t.text for t in rest if t.text.startswith("--")}
            if actions and actions <= {
                "--remove", "--remove-all", "--query", "--display", "--list", "--quiet",
                "--get-selections",
            }:  # fmt: skip
                return None
        if name == "sed" and any(t.text.startswith(("-i", "--in-place")) for t in rest):
            self.effect("sed -i", "edits a file in place")
            return None
        if name == "find" and any(t.text in ("-delete", "-exec", "-execdir") for t in rest):
            self.effect("find", "changes files")
            return None
        if name.startswith("db_"):
            self.effect(name, "asks debconf questions")
            return None
        if name in NO_EFFECT or name in HARMLESS:
            return None
        self.effect(name, EFFECTS.get(name, "an action sysext cannot tell is harmless"))
        return None

    def _nested(self, inner: str) -> None:
        try:
            tree = parse_script(inner)
        except ScriptSyntaxError:
            self.effect("$(…)", "a command substitution sysext cannot read")
            return
        self.run(tree)


def _glob(pattern: str, value: str) -> bool:
    return fnmatch.fnmatchcase(value, pattern)


def script_effects(script: str, text: str) -> list[Effect]:
    """The effects of one script on a first installation (see the module docstring)."""
    args = FIRST_INSTALL[script]
    analyser = _Analyser(script, {"1": args[0], "2": args[1], "@": " ".join(args).strip()})
    try:
        tree = parse_script(text)
    except ScriptSyntaxError as exc:
        return [Effect(script, "(unreadable)", f"sysext cannot read this script: {exc}")]
    if not text.startswith("#!") or "sh" not in text.splitlines()[0]:
        first = text.splitlines()[0] if text else ""
        return [Effect(script, first or "(empty)", "not a shell script")]
    analyser.run(tree)
    return analyser.effects


def package_effects(scripts: Mapping[str, str]) -> list[Effect]:
    """The effects of a package's first-install scripts (preinst, config, postinst)."""
    found: list[Effect] = []
    for name in FIRST_INSTALL:
        text = scripts.get(name)
        if text is not None:
            found += script_effects(name, text)
    return found


def describe(effects: Sequence[Effect]) -> str:
    """`postinst runs adduser (creates a user or group), apparmor_parser (…)`."""
    by_script: dict[str, list[str]] = {}
    for effect in effects:
        by_script.setdefault(effect.script, []).append(f"{effect.command} ({effect.what})")
    return "; ".join(f"{script} runs {', '.join(items)}" for script, items in by_script.items())


def iter_harmless() -> Iterator[tuple[str, str]]:
    """The documented list of harmless commands (recipes/README.md)."""
    yield from sorted(HARMLESS.items())
