"""``n2m export CKPT --out DIR``'s command line (the job: :func:`n2m.training.export_job.run_export`): a training
checkpoint's EMA weights as safetensors + config.json for inference. Load the result with
:func:`n2m.training.export.load_exported`.
"""

from __future__ import annotations

import argparse

from n2m.config import job, leaf


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT", help="an n2m train checkpoint (e.g. RUNDIR/checkpoints/best.ckpt)")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for model.safetensors and config.json")
    leaf(parser, job("n2m.training.export_job:run_export"))
