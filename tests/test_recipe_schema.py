"""The recipe format is declared once (the models of sysext/recipe/model.py): the published
JSON Schema and the README's key table are generated from it and must be current, every
shipped recipe points editors at the schema, the schema accepts every shipped recipe and
rejects what the parser rejects, and adding a key is one edit to the model."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest

from sysext.recipe.docs import json_schema_text, readme_with_table
from sysext.recipe.model import available_recipes, bundled_recipes_dir, load_recipe

RECIPES = bundled_recipes_dir()


def test_schema_json_is_generated_from_the_declaration() -> None:
    assert (RECIPES / "schema.json").read_text() == json_schema_text(), (
        "recipes/schema.json is stale: run python -m sysext.recipe.docs"
    )


def test_readme_key_table_is_generated_from_the_declaration() -> None:
    readme = (RECIPES / "README.md").read_text()
    assert readme == readme_with_table(readme), (
        "the key table in recipes/README.md is stale: run python -m sysext.recipe.docs"
    )
    for key in ("signature_url", "signing_keys", "replaces", "tag_prefix", "exclude"):
        assert f"| `{key}` |" in readme


@pytest.mark.parametrize("name", available_recipes(RECIPES))
def test_shipped_recipe_names_the_schema_and_validates_against_it(name: str) -> None:
    text = (RECIPES / f"{name}.toml").read_text()
    assert text.startswith("#:schema ./schema.json\n")
    schema = json.loads((RECIPES / "schema.json").read_text())
    jsonschema.validate(tomllib.loads(text), schema)


@pytest.mark.parametrize(
    ("patch", "path"),
    [
        ({"colour": "red"}, []),
        ({"version": 3}, ["version"]),
        ({"architectures": ["x86_64"]}, ["architectures", 0]),
    ],
)
def test_schema_rejects_what_the_parser_rejects(
    patch: dict[str, object], path: list[object]
) -> None:
    schema = json.loads((RECIPES / "schema.json").read_text())
    document = tomllib.loads((RECIPES / "tailscale.toml").read_text()) | patch
    with pytest.raises(jsonschema.ValidationError) as info:
        jsonschema.validate(document, schema)
    assert list(info.value.absolute_path) == path


def test_readme_lists_every_recipe_with_its_integrity_source() -> None:
    readme = (RECIPES / "README.md").read_text()
    table = readme.split("## Shipped recipes", 1)[1]
    rows = {line.split("|")[1].strip(" `") for line in table.splitlines() if line.startswith("| `")}
    assert rows == set(available_recipes(RECIPES))


def test_readme_shows_a_complete_recipe_in_under_30_lines(tmp_path: Path) -> None:
    readme = (RECIPES / "README.md").read_text()
    section = readme.split("## Adding a recipe", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    assert len(example.splitlines()) < 30
    (tmp_path / "hello.toml").write_text(example)
    recipe = load_recipe(tmp_path / "hello.toml")
    assert recipe.versions is not None and recipe.versions.github == "example/hello"
    assert [f.path for f in recipe.files] == [
        "usr/lib/systemd/system/hello.service",
        "usr/lib/systemd/system/multi-user.target.d/10-hello.conf",
    ]


# Run in a copy of the package whose model gained one key; prints what each part of the
# format makes of it.
_NEW_KEY_PROBE = """
import json, sys
from pathlib import Path
import sysext
from sysext.core.errors import SysextError
from sysext.recipe import docs
from sysext.recipe.model import load_recipe

assert Path(sysext.__file__).parent == Path("sysext").resolve(), sysext.__file__
docs.main(["recipes"])
out = {"readme": Path("recipes/README.md").read_text(),
       "schema": json.loads(Path("recipes/schema.json").read_text())}
recipe = load_recipe(Path("good.toml"))
out["value"] = recipe.sources[0].mirror_url
for bad in ("wrong-type.toml", "wrong-kind.toml"):
    try:
        load_recipe(Path(bad))
    except SysextError as exc:
        out[bad] = [exc.message, exc.hint]
print(json.dumps(out))
"""

_SOURCE = """
version = "1.0"
architectures = ["x86-64"]
[[sources]]
{source}
sha256 = "{hex}"
mirror_url = {mirror}
[[install]]
from = "hello"
to = "usr/bin/hello"
"""


def test_adding_a_key_is_one_edit_to_the_model(tmp_path: Path) -> None:
    """One new field in a copy of sysext/recipe/model.py, nothing else: the parser takes
    the key and puts its value on the model, a wrong value or a kind that does not take it
    gets the one-line error naming file and key, and the regenerated JSON Schema and README
    table list it with its kinds."""
    package = Path(__file__).resolve().parents[1] / "sysext"
    shutil.copytree(package, tmp_path / "sysext", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(RECIPES, tmp_path / "recipes")
    model = tmp_path / "sysext" / "recipe" / "model.py"
    anchor = '    package: NonEmpty | None = _doc("project / package name", "pypi, deb")\n'
    text = model.read_text()
    assert text.count(anchor) == 1
    new_field = '    mirror_url: NonEmpty | None = _doc("a second download URL", "url")\n'
    model.write_text(text.replace(anchor, new_field + anchor))
    url = 'url = "https://example.invalid/hello-{version}"'
    for file, source, mirror in [
        ("good.toml", url, '"https://mirror.invalid/hello"'),
        ("wrong-type.toml", url, "3"),
        ("wrong-kind.toml", 'kind = "file"\npath = "hello"', '"https://mirror.invalid/hello"'),
    ]:
        (tmp_path / file).write_text(_SOURCE.format(source=source, hex="ab" * 32, mirror=mirror))
    proc = subprocess.run(
        [sys.executable, "-c", _NEW_KEY_PROBE],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["value"] == "https://mirror.invalid/hello"
    assert seen["wrong-type.toml"] == [
        "recipe wrong-type.toml: sources[0].mirror_url: expected a non-empty string, got 3",
        None,
    ]
    message, hint = seen["wrong-kind.toml"]
    assert message == "recipe wrong-kind.toml: sources[0].mirror_url: unknown key"
    assert hint.startswith("a file source takes: ") and "mirror_url" not in hint
    assert "| [[sources]] | `mirror_url` | url |  | a second download URL |" in seen["readme"]
    source_schema = seen["schema"]["$defs"]["SourceSpec"]["properties"]["mirror_url"]
    assert source_schema["x-kinds"] == "url"
    # and the committed artefacts, generated from the unmodified model, do not have it
    assert "mirror_url" not in (RECIPES / "README.md").read_text()
