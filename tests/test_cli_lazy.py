"""The ``n2m`` front door is lazy (n2m/cli.py): listing the jobs imports no job module and none of the heavy libraries;
``n2m JOB --help`` imports that job's module only. Read from ``sys.modules`` of a fresh interpreter, not from wall
time."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from n2m.cli import COMMANDS

SUBSYSTEMS = ("pipelines", "labeling", "training", "eval")
HEAVY = ("torch", "apache_beam", "transformers", "lightning", "numpy", "pyarrow")


def imported(*argv: str, code: int = 0) -> tuple[set[str], str, str]:
    """(``sys.modules`` of a fresh interpreter after running ``n2m ARGV``, its stdout, its stderr); the run must exit
    with ``code``. (``-X importtime`` would miss the job modules: ``importlib.import_module`` bypasses its log.)"""
    script = (f"import sys\nfrom n2m.cli import main\ntry:\n    code = main({list(argv)!r})\n"
              "except SystemExit as done:\n    code = done.code\n"
              "sys.stderr.write('\\nMODULES ' + ' '.join(sorted(sys.modules)))\nsys.exit(code)")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == code, done.stderr[-2000:]
    err, _, modules = done.stderr.rpartition("\nMODULES ")
    return set(modules.split()), done.stdout, err


def tops(modules: set[str]) -> set[str]:
    """The top-level packages among ``modules``, a subsystem (``n2m.training.x``) counted by its own name."""
    return {name.split(".")[1] if name.startswith("n2m.") and name.split(".")[1] in SUBSYSTEMS else name.split(".")[0]
            for name in modules}


def test_listing_the_jobs_imports_no_job_module_and_no_heavy_library():
    modules, out, _ = imported("--help")
    assert "n2m.cli" in modules and "argparse" in modules  # the measurement sees the imports
    assert tops(modules) & set(SUBSYSTEMS + HEAVY) == set()
    assert modules.isdisjoint(module for _, module in COMMANDS.values())
    for name in COMMANDS:
        assert re.search(rf"^    {re.escape(name)}\s", out, re.M), name  # every job is still listed


def test_a_jobs_help_imports_that_job_only():
    modules, out, _ = imported("build", "--help")
    assert "n2m.pipelines.cli" in modules and "--print-config" in out
    assert tops(modules) & {"labeling", "training", "eval"} == set()
    assert "--input SRC" in out and "[--input SRC]" not in out  # the usage still marks required options


def test_version_reads_the_package_metadata_only_when_asked():
    modules, out, _ = imported("--version")
    assert out.startswith("n2m ") and tops(modules) & set(SUBSYSTEMS + HEAVY) == set()


@pytest.mark.parametrize("argv", [["nosuchjob"], ["--nosuchflag"]])
def test_an_unknown_job_or_flag_is_refused_without_importing_the_jobs(argv):
    modules, _, err = imported(*argv, code=2)
    assert "error:" in err and tops(modules) & set(SUBSYSTEMS + HEAVY) == set()
