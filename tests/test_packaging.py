"""Packaging (issue 15 item 5): the four subsystem folders install as ``n2m.pipelines``, ``n2m.labeling``,
``n2m.training`` and ``n2m.eval`` (pyproject.toml's package-dir), so an installed n2m adds one top-level name, ``n2m``,
and none as generic as ``eval`` or ``training``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBSYSTEMS = ("pipelines", "labeling", "training", "eval")


def test_an_interpreter_outside_the_repository_finds_the_subsystems_under_n2m_only(tmp_path):
    """A fresh interpreter in another folder (``-I``: neither the working folder nor PYTHONPATH on sys.path) sees only
    what is installed: ``n2m.training`` is the repository's training folder, ``training`` is nothing."""
    code = ("import importlib, importlib.util, json\n"
            f"subsystems = {SUBSYSTEMS!r}\n"
            "found = {name: importlib.import_module('n2m.' + name).__file__ for name in subsystems}\n"
            "found['n2m.pipelines.job'] = importlib.import_module('n2m.pipelines.job').__file__\n"
            "bare = {name: importlib.util.find_spec(name) is not None for name in subsystems}\n"
            "print(json.dumps({'found': found, 'bare': bare}))\n")
    done = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    seen = json.loads(done.stdout)
    assert seen["found"] == {**{name: str(ROOT / name / "__init__.py") for name in SUBSYSTEMS},
                             "n2m.pipelines.job": str(ROOT / "pipelines" / "job.py")}
    assert seen["bare"] == dict.fromkeys(SUBSYSTEMS, False), "re-install n2m (make setup): the old names are installed"


def test_pyproject_lists_every_package_folder_under_its_n2m_name():
    tomllib = pytest.importorskip("tomllib")
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == {"n2m": "n2m", **{f"n2m.{name}": name for name in SUBSYSTEMS}}
    folders = {"n2m": ROOT / "n2m", **{f"n2m.{name}": ROOT / name for name in SUBSYSTEMS}}
    expected = {package + "".join("." + part for part in path.relative_to(root).parts)
                for package, root in folders.items() for path in [root, *root.rglob("*")]
                if path.is_dir() and path.name != "__pycache__" and any(f.is_file() for f in path.iterdir())}
    assert sorted(setuptools["packages"]) == sorted(expected)
