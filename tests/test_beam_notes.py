"""Importing a Beam job's module logs nothing about Beam's optional GCP clients (issue 14, item 20): Beam workers import
the job modules themselves (to unpickle their DoFns), not through the CLI, so the silencing must come with the import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize("module", ["n2m.pipelines.job", "n2m.labeling.job"])
def test_importing_a_beam_job_logs_no_optional_dependency_notes(module):
    code = f"import logging; logging.basicConfig(level=logging.INFO); import {module}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert "apitools" not in done.stderr and "bigquery_storage" not in done.stderr
