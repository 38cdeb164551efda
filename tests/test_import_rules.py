"""The import rules of docs/architecture.md section 2, read from the source with ``ast`` (module level and inside
functions alike): the core imports no subsystem, pipelines and labeling import only the core, labeling and training never
import each other, eval reaches training only through its public sampling API. The subsystems are the packages
``n2m.pipelines``, ``n2m.labeling``, ``n2m.training`` and ``n2m.eval`` (the folders beside ``n2m/``, pyproject.toml);
a module is never imported under a folder's bare name."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBSYSTEMS = ("pipelines", "labeling", "training", "eval")
PARTS = ("n2m", *SUBSYSTEMS)  # the core and the four subsystems, each a folder at the root
# part -> what it may import of the others: a part by name, or (dotted) the modules under a prefix
ALLOWED: dict[str, tuple[str, ...]] = {
    "n2m": (),
    "pipelines": ("n2m",),
    "labeling": ("n2m",),
    "training": ("n2m",),
    "eval": ("n2m", "n2m.training.sampling", "n2m.training.sample_files", "n2m.training.cascade",
             "n2m.training.export"),
}


def imported_modules(path: Path) -> list[str]:
    """What ``path`` imports: ``import a.b`` -> ``a.b``; ``from a import b`` -> ``a.b`` (``b`` may be a module)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.extend(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def part_of(module: str) -> str | None:
    """The part of n2m ``module`` belongs to (``n2m.training.x`` -> training, ``n2m.audio`` -> n2m), else None."""
    names = module.split(".")
    if names[0] != "n2m":
        return None
    return names[1] if len(names) > 1 and names[1] in SUBSYSTEMS else "n2m"


def allows(allowed: str, module: str) -> bool:
    """Whether the entry ``allowed`` of :data:`ALLOWED` (a part, or a dotted module prefix) covers ``module``."""
    if "." not in allowed:
        return part_of(module) == allowed
    return module == allowed or module.startswith(allowed + ".")


def violations(part: str) -> list[str]:
    bad = []
    for path in sorted((ROOT / part).rglob("*.py")):
        for module in imported_modules(path):
            if module.split(".")[0] in SUBSYSTEMS:
                bad.append(f"{path.relative_to(ROOT)} imports {module} (the subsystem is n2m.{module.split('.')[0]})")
                continue
            other = part_of(module)
            if other is None or other == part:
                continue
            if not any(allows(allowed, module) for allowed in ALLOWED[part]):
                bad.append(f"{path.relative_to(ROOT)} imports {module}")
    return bad


@pytest.mark.parametrize("part", PARTS)
def test_package_imports_only_what_the_rules_allow(part):
    assert violations(part) == []


def test_the_checker_sees_function_level_imports(tmp_path):
    """A check that cannot fail is no check: a function-level import of a forbidden package is reported."""
    module = tmp_path / "m.py"
    module.write_text("def f():\n    from n2m.training.module import DiffusionModule\n    import n2m.labeling.job\n"
                      "    from n2m import eval\n")
    assert imported_modules(module) == ["n2m.training.module.DiffusionModule", "n2m.labeling.job", "n2m.eval"]
    assert [part_of(m) for m in imported_modules(module)] == ["training", "labeling", "eval"]
    assert part_of("n2m.audio") == "n2m" and part_of("numpy") is None


def test_a_bare_folder_name_is_a_violation(tmp_path, monkeypatch):
    """``import training`` (the folder's name, not the package) is reported wherever it is."""
    package = tmp_path / "labeling"
    package.mkdir()
    (package / "x.py").write_text("import training.module\nfrom n2m.training import text\nfrom n2m import audio\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    assert violations("labeling") == ["labeling/x.py imports training.module (the subsystem is n2m.training)",
                                      "labeling/x.py imports n2m.training.text"]
