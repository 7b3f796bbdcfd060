"""The layers point down (STYLE.md): `core` imports no app, `tenants` knows nothing of models and surfaces
(it may read the events' vocabulary, to check event weights), no app imports `operations` (the top), and
the engine imports no Django. Read from the source, so a
new import that breaks a layer fails here, lazy ones inside functions included."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
APPS = ("core", "tenants", "catalog", "events", "recommendations", "outcomes", "operations")
# what each package may not import (its own sub-packages aside)
FORBIDDEN = {
    "core": ("tenants", "catalog", "events", "recommendations", "operations"),
    "tenants": ("catalog", "recommendations", "operations"),
    "catalog": ("events", "recommendations", "outcomes", "operations"),
    "events": ("recommendations", "outcomes", "operations"),
    "recommendations": ("outcomes", "operations"),
    # outcomes reads the events it attributes (events' selectors); nothing below it knows it
    "outcomes": ("catalog", "recommendations", "operations"),
    "recommendations/engine": ("django", "rest_framework", "core", "tenants", "catalog", "events", "config"),
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_layers_point_down(package):
    offending = []
    for path in sorted((ROOT / package).rglob("*.py")):
        if "migrations" in path.parts:
            continue
        for module in _imports(path):
            top = module.split(".")[0]
            if top in FORBIDDEN[package] or (
                package == "recommendations/engine"
                and module.startswith("recommendations.")
                and not module.startswith("recommendations.engine")
            ):
                offending.append(f"{path.relative_to(ROOT)} imports {module}")
    assert offending == []


def test_every_app_is_checked():
    assert set(APPS) <= {name.split("/")[0] for name in FORBIDDEN} | {"operations"}
