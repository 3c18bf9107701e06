"""Recipe parsing: the shipped recipes load, and every malformed recipe gets ONE error that
names the file, the key and what was expected."""

from __future__ import annotations

from pathlib import Path

import pytest

from sysext.core.errors import SysextError
from sysext.recipe.model import (
    Recipe,
    Sha256Pins,
    available_recipes,
    bundled_recipes_dir,
    find_recipe,
    load_recipe,
)
from sysext.systemd.architecture import Architecture
from tests.servers import run_cli

HEX = "ab" * 32

GOOD = f"""
name = "hello"
version = "1.2.3"
architectures = ["x86-64", "arm64"]
description = "A greeting"

[arch_map]
x86-64 = "amd64"
arm64 = "arm64"

[[sources]]
url = "https://example.invalid/hello-{{version}}-{{arch}}.tar.gz"
sha256 = "{HEX}"
strip_components = 1

[[install]]
from = "bin/hello"
to = "usr/bin/hello"
mode = "0755"

[[files]]
path = "usr/lib/systemd/system/hello.service"
content = "[Service]\\nExecStart=/usr/bin/hello\\n"

[extension_release]
HELLO_FLAVOUR = "plain"
"""


def write(tmp_path: Path, text: str, name: str = "hello.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_good_recipe_parses_into_typed_data(tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, GOOD))
    assert isinstance(recipe, Recipe)
    assert recipe.name == "hello"
    assert recipe.architectures == (Architecture.X86_64, Architecture.ARM64)
    assert recipe.sources[0].kind == "url"
    assert recipe.sources[0].strip_components == 1
    assert recipe.install[0].mode == 0o755
    assert recipe.files[0].mode == 0o644
    assert dict(recipe.extension_release) == {"HELLO_FLAVOUR": "plain"}
    assert (
        recipe.expand(recipe.sources[0].url or "", "1.2.3", Architecture.X86_64, "url")
        == "https://example.invalid/hello-1.2.3-amd64.tar.gz"
    )


def test_sha256_pins_prefer_the_most_specific() -> None:
    pins = Sha256Pins(
        single="0" * 64,
        by_arch={Architecture.ARM64: "1" * 64},
        by_version={"2.0": {Architecture.X86_64: "2" * 64, None: "3" * 64}},
    )
    assert pins.lookup("1.0", Architecture.X86_64, default_version="1.0") == "0" * 64
    assert pins.lookup("1.0", Architecture.ARM64, default_version="1.0") == "1" * 64
    assert pins.lookup("2.0", Architecture.X86_64, default_version="1.0") == "2" * 64
    assert pins.lookup("2.0", Architecture.ARM64, default_version="1.0") == "3" * 64
    # Unkeyed pins describe the default version only: another version needs its own.
    assert pins.lookup("1.1", Architecture.X86_64, default_version="1.0") is None


@pytest.mark.parametrize("name", ["podman", "shellcheck"])
def test_shipped_recipes_load(name: str) -> None:
    recipe = load_recipe(find_recipe(name))
    assert recipe.name == name
    assert recipe.versions is not None
    for arch in recipe.architectures:
        for spec in recipe.sources:
            if spec.url:
                url = recipe.expand(spec.url, recipe.version, arch, "url")
                assert "{" not in url and "x86-64" not in url


def test_podman_recipe_uses_the_real_upstream_layout() -> None:
    recipe = load_recipe(find_recipe("podman"))
    url = recipe.expand(recipe.sources[0].url or "", "5.3.1", Architecture.ARM64, "url")
    assert url == (
        "https://github.com/mgoltzsche/podman-static/releases/download/v5.3.1/"
        "podman-linux-arm64.tar.gz"
    )
    # podman-static publishes signatures, not checksums: the recipe pins the signing key.
    assert recipe.sources[0].signing_keys == ("0CCF102C4F95D89E583FF1D4F8B5AF50344BB503",)
    assert recipe.expand(recipe.sources[0].signature_url or "", "5.3.1", Architecture.ARM64, "s")
    assert recipe.sources[0].sha256.empty


# (recipe text transformation, expected message fragment)
BAD: list[tuple[str, str, str]] = [
    (
        "bad hash",
        GOOD.replace(f'"{HEX}"', '"abc"'),
        "sources[0].sha256: expected 64 hex digits, got 'abc'",
    ),
    ("unknown top key", 'colour = "red"\n' + GOOD, "colour: unknown key"),
    # The model's Python name for a key is not a second spelling of it.
    ("python name of a key", 'declared_name = "x"\n' + GOOD, "declared_name: unknown key"),
    (
        "dash instead of underscore",
        GOOD.replace("strip_components", "strip-components"),
        "sources[0].strip-components: unknown key",
    ),
    ("missing version", GOOD.replace('version = "1.2.3"\n', ""), "version: missing"),
    (
        "bad version",
        GOOD.replace('"1.2.3"', '"1.2~rc1"'),
        "version: version '1.2~rc1' contains '~'",
    ),
    (
        "upstream arch name",
        GOOD.replace('["x86-64", "arm64"]', '["x86_64"]'),
        "architectures[0]: architecture 'x86_64' is not systemd's name",
    ),
    ("no sources", GOOD.split("[[sources]]")[0], "sources: missing"),
    (
        "unknown kind",
        GOOD.replace("[[sources]]\n", '[[sources]]\nkind = "ftp"\n'),
        "sources[0].kind: expected one of apt, deb, file, pypi, url, got 'ftp'",
    ),
    (
        "url without integrity",
        GOOD.replace(f'sha256 = "{HEX}"\n', ""),
        "sources[0]: needs `sha256` or `checksum_url`",
    ),
    (
        "unknown placeholder",
        GOOD.replace("{version}", "{ver}"),
        "sources[0].url: unknown placeholder {ver}",
    ),
    (
        "missing arch_map entry",
        GOOD.replace('arm64 = "arm64"\n', ""),
        "sources[0].url: uses {arch} but arch_map has no entry for arm64",
    ),
    (
        "install outside usr",
        GOOD.replace('to = "usr/bin/hello"', 'to = "etc/hello"'),
        "install[0].to: expected a path below usr/ or opt/, got 'etc/hello'",
    ),
    (
        "install with ..",
        GOOD.replace('to = "usr/bin/hello"', 'to = "usr/../etc/hello"'),
        "install[0].to: expected a normalized path",
    ),
    (
        "bad mode",
        GOOD.replace('mode = "0755"', "mode = 755"),
        'install[0].mode: expected an octal mode string such as "0755", got 755',
    ),
    ("install without from", GOOD.replace('from = "bin/hello"\n', ""), "install[0].from: missing"),
    (
        "unknown install source",
        GOOD.replace("[[install]]\n", '[[install]]\nsource = "nope"\n'),
        "install[0].source: expected one of the source ids",
    ),
    (
        "file content not text",
        GOOD.replace('content = "[Service]\\nExecStart=/usr/bin/hello\\n"', "content = 3"),
        "files[0].content: expected the file's text as a string, got 3",
    ),
    (
        "managed release field",
        GOOD.replace("HELLO_FLAVOUR", "ARCHITECTURE"),
        "extension_release.ARCHITECTURE: is written by sysext itself",
    ),
    (
        "lower-case release field",
        GOOD.replace("HELLO_FLAVOUR", "flavour"),
        "extension_release.flavour: expected an os-release field name",
    ),
    ("bad os", 'os = "flatcar:"\n' + GOOD, 'os: expected "ID" or "ID:SYSEXT_LEVEL"'),
    (
        "bad name",
        GOOD.replace('name = "hello"', 'name = "hel/lo"'),
        "name: extension name 'hel/lo' contains '/'",
    ),
    (
        "strip not int",
        GOOD.replace("strip_components = 1", 'strip_components = "1"'),
        "sources[0].strip_components: expected an integer from 0 to 16, got '1'",
    ),
    (
        "bad format",
        GOOD.replace("strip_components = 1", 'format = "rar"'),
        "sources[0].format: expected one of tar, tar.gz",
    ),
    ("bad toml", GOOD + "[[[\n", "invalid TOML"),
    (
        "versions with both feeds",
        GOOD + '[versions]\ngithub = "a/b"\npypi = "c"\n',
        "versions: expected exactly one of `github` or `pypi`",
    ),
    (
        "pypi without package",
        GOOD.replace('url = "https', 'kind = "pypi"\nurl = "https'),
        "sources[0].url: unknown key",
    ),
    (
        "version pin not hex",
        GOOD.replace(f'sha256 = "{HEX}"', 'sha256."1.2.3".x86-64 = "xyz"'),
        "sources[0].sha256.\"1.2.3\".x86-64: expected 64 hex digits, got 'xyz'",
    ),
]


@pytest.mark.parametrize(("label", "text", "expected"), BAD, ids=[b[0] for b in BAD])
def test_malformed_recipe_names_file_key_and_expectation(
    tmp_path: Path, label: str, text: str, expected: str
) -> None:
    with pytest.raises(SysextError) as info:
        load_recipe(write(tmp_path, text))
    message = info.value.message
    assert message.startswith("recipe hello.toml: "), message
    assert expected in message, message
    assert "\n" not in message


def test_malformed_recipe_through_the_cli_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    recipe = write(tmp_path, GOOD.replace(f'"{HEX}"', '"abc"'))
    out = tmp_path / "out"
    result = run_cli("build", recipe, "--output", out, "--cache-dir", tmp_path / "cache")
    assert result.returncode == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert lines == [
        "error: recipe hello.toml: sources[0].sha256: expected 64 hex digits, got 'abc'"
    ]
    assert "Traceback" not in result.stderr
    assert not out.exists()
    assert not (tmp_path / "cache").exists()


def test_unknown_recipe_name_lists_the_available_ones(tmp_path: Path) -> None:
    (tmp_path / "one.toml").write_text(GOOD)
    (tmp_path / "two.toml").write_text(GOOD)
    with pytest.raises(SysextError) as info:
        find_recipe("three", tmp_path)
    assert "no recipe named 'three'" in info.value.message
    assert info.value.hint == "available: one, two"
    result = run_cli("build", "nosuchrecipe", "--output", tmp_path / "out")
    assert result.returncode == 2
    assert "no recipe named 'nosuchrecipe'" in result.stderr
    assert "podman" in result.stderr and "shellcheck" in result.stderr


def test_recipes_dir_lookup(tmp_path: Path) -> None:
    (tmp_path / "hello.toml").write_text(GOOD)
    assert find_recipe("hello", tmp_path) == tmp_path / "hello.toml"
    assert "podman" in available_recipes(bundled_recipes_dir())


def test_the_worked_example_in_recipes_readme_is_a_valid_recipe(tmp_path: Path) -> None:
    readme = (bundled_recipes_dir() / "README.md").read_text()
    example = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    recipe = load_recipe(write(tmp_path, example))
    assert recipe.name == "hello"
    assert recipe.os_id == "flatcar" and recipe.sysext_level == "1.0"
    assert [f.path for f in recipe.files][-1] == "usr/lib/sysusers.d/hello.conf"
    assert recipe.versions is not None and recipe.versions.github == "example/hello"
