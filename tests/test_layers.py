"""The folders of vault/ are layers: each imports only the layers beneath it (issue 16).

The store must not reach up into the domain (``records.py`` once imported the ``Vault`` facade and
``ClientRef`` for its types, a circle through ``core.py``); the key layer knows nothing of storage.
Every import counts, those under ``TYPE_CHECKING`` and inside functions included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

VAULT = Path(__file__).resolve().parent.parent / "vault"
# What each layer may import from the rest of vault/ (besides itself).
ALLOWED = {
    "keys": {"errors", "clock", "validate", "files", "paths", "process"},
    "store": {"errors", "keys", "clock", "migrations"},
    "team": {
        "errors",
        "keys",
        "files",
        "clock",
    },  # the team cryptography: no database, no facade  # migrations: the Alembic scripts it runs
}


def _imports(path: Path, root: Path = VAULT) -> set[str]:
    """The top-level vault/ names (``keys``, ``core``, ``store``…) a module imports."""
    rel = path.relative_to(root).with_suffix("").parts
    package = list(rel[:-1])
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            target = [*base, *(node.module.split(".") if node.module else [])]
            if target:
                found.add(target[0])
            else:  # from . import x (at the root of vault/)
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names = [node.module] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
            for name in names:
                if name and name.startswith("handover_vault."):
                    found.add(name.split(".")[1])
    return found


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_a_layer_imports_only_what_lies_beneath(layer: str) -> None:
    for path in sorted((VAULT / layer).glob("*.py")):
        reached = _imports(path) - {layer} - ALLOWED[layer]
        assert not reached, f"vault/{layer}/{path.name} reaches up into {sorted(reached)}"


def test_the_walker_sees_an_upward_import(tmp_path: Path) -> None:
    # The check itself can fail: a store module that imports the facade under TYPE_CHECKING is seen.
    (tmp_path / "store").mkdir()
    probe = tmp_path / "store" / "records.py"
    probe.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..core import Vault\n")
    assert _imports(probe, tmp_path) == {"core"}
