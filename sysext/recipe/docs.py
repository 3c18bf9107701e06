"""Artefacts generated from the recipe declaration (the models of sysext.recipe.model).

`recipes/schema.json` is the JSON Schema editors such as taplo use to complete and check
keys (each recipe starts with `#:schema ./schema.json`); the key table in
recipes/README.md is the reference. `python -m sysext.recipe.docs` rewrites both; a test
fails when either is out of date.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from sysext.core.errors import SysextError
from sysext.recipe.model import Recipe, SourceSpec, field_meta, tables


def json_schema() -> dict[str, Any]:
    schema = Recipe.model_json_schema(by_alias=True)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema}


def json_schema_text() -> str:
    return json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"


TABLE_BEGIN = "<!-- BEGIN generated key table (python -m sysext.recipe.docs) -->"
TABLE_END = "<!-- END generated key table -->"


def key_table() -> str:
    """The README's reference table, one row per key, from the same declaration."""
    lines = [
        TABLE_BEGIN,
        "",
        "| table | key | kinds | required | meaning |",
        "|---|---|---|---|---|",
    ]
    for section, model in tables():
        for name, info in model.model_fields.items():
            kinds = str(field_meta(info, "x-kinds") or "") if model is SourceSpec else ""
            required = "yes" if info.is_required() else ""
            meaning = (info.description or "").replace("|", "\\|")
            lines.append(
                f"| {section} | `{info.alias or name}` | {kinds or '—'} | {required} | {meaning} |"
            )
    lines += ["", TABLE_END]
    return "\n".join(lines)


def readme_with_table(readme: str) -> str:
    start, end = readme.find(TABLE_BEGIN), readme.find(TABLE_END)
    if start < 0 or end < 0:
        raise SysextError("recipes/README.md has no generated key table markers")
    return readme[:start] + key_table() + readme[end + len(TABLE_END) :]


def main(argv: list[str]) -> int:
    """Rewrite recipes/schema.json and the key table in recipes/README.md."""
    recipes = Path(argv[0]) if argv else Path(__file__).resolve().parents[2] / "recipes"
    (recipes / "schema.json").write_text(json_schema_text(), encoding="utf-8")
    readme = recipes / "README.md"
    readme.write_text(readme_with_table(readme.read_text(encoding="utf-8")), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
