"""``n2m export CKPT --out DIR``: a training checkpoint's EMA weights as safetensors + config.json for inference.

Load the result with :func:`training.export.load_exported`.
"""

from __future__ import annotations

import argparse

from n2m.config import leaf


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT", help="an n2m train checkpoint (e.g. RUNDIR/checkpoints/best.ckpt)")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for model.safetensors and config.json")
    leaf(parser, run_export)


def run_export(args: argparse.Namespace) -> int:
    from training.export import export_checkpoint, load_exported
    from training.networks.presets import count_parameters

    out = export_checkpoint(args.checkpoint, args.out)
    exported = load_exported(out)  # proves the export rebuilds before anyone relies on it
    params = count_parameters(exported.config["net"])
    print(f"n2m export: {exported.stage} ({params:,} parameters, EMA weights of step "
          f"{exported.config['source']['global_step']}) -> {out}")
    return 0
