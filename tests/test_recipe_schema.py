"""The recipe format is declared once (sysext/recipe/schema.py): the published JSON Schema
and the README's key table are generated from it and must be current, every shipped
recipe points editors at the schema, and the schema accepts every shipped recipe and
rejects what the parser rejects."""

from __future__ import annotations

import json
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
