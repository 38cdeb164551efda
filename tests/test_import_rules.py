"""The import rules of docs/architecture.md section 2, read from the source with ``ast`` (module level and inside
functions alike): the core imports no subsystem, pipelines and labeling import only the core, labeling and training never
import each other, eval reaches training only through its public sampling API."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("n2m", "pipelines", "labeling", "training", "eval")
# package -> the other packages it may import (module prefixes for eval -> training)
ALLOWED: dict[str, tuple[str, ...]] = {
    "n2m": (),
    "pipelines": ("n2m",),
    "labeling": ("n2m",),
    "training": ("n2m",),
    "eval": ("n2m", "training.sampling", "training.sample_files", "training.cascade", "training.export"),
}


def imported_modules(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append(node.module)
    return found


def violations(package: str) -> list[str]:
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for module in imported_modules(path):
            top = module.split(".")[0]
            if top not in PACKAGES or top == package:
                continue
            if not any(module == allowed or module.startswith(allowed + ".") for allowed in ALLOWED[package]):
                bad.append(f"{path.relative_to(ROOT)} imports {module}")
    return bad


@pytest.mark.parametrize("package", PACKAGES)
def test_package_imports_only_what_the_rules_allow(package):
    assert violations(package) == []


def test_the_checker_sees_function_level_imports(tmp_path):
    """A check that cannot fail is no check: a function-level import of a forbidden package is reported."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from training.module import DiffusionModule\n    import labeling.job\n")
    assert imported_modules(module) == ["training.module", "labeling.job"]
