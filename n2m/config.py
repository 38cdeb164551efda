"""YAML config files with command-line overrides, shared by every ``n2m`` job.

A job's parser takes ``--config FILE``: the YAML's keys are the job's option names (dashes or underscores), its values
become the parser's defaults, and flags given on the command line still win. Unknown keys fail loudly.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from n2m.errors import UserError

_PRIVATE = ("func", "_parser", "config", "verbose")


def leaf(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int | None]) -> None:
    """Make ``parser`` a runnable job: it takes ``--config`` and ``--verbose`` and dispatches to ``run(args)``."""
    parser.add_argument("--config", metavar="YAML", help="YAML file of option values; command-line flags override it")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details and show tracebacks on errors")
    parser.set_defaults(func=run, _parser=parser)


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with a one-line error for a missing or malformed file."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise UserError(f"cannot read config {path}: {err.strerror}") from err
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise UserError(f"config {path} is not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise UserError(f"config {path} must be a mapping of option names to values")
    return data


def apply_config(root: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> argparse.Namespace:
    """Re-parse ``argv`` with the YAML file of ``args.config`` as defaults of the job's own parser."""
    if not getattr(args, "config", None):
        return args
    parser: argparse.ArgumentParser = args._parser
    known = {action.dest for action in parser._actions}
    values = {}
    for key, value in load_yaml(args.config).items():
        dest = str(key).replace("-", "_")
        if dest not in known or dest in _PRIVATE:
            raise UserError(f"config {args.config}: unknown option {key!r}")
        values[dest] = value
    parser.set_defaults(**values)
    return root.parse_args(argv)


def resolved(args: argparse.Namespace) -> dict[str, Any]:
    """The job's options as a plain dict (for ``--dry-run`` and the config recorded in every artifact)."""
    out = {}
    for key, value in vars(args).items():
        if key in _PRIVATE or key.startswith("_"):
            continue
        out[key] = str(value) if isinstance(value, Path) else value
    return out
