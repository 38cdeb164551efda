"""YAML config files with command-line overrides, shared by every ``n2m`` job.

A job's parser takes ``--config FILE``: the YAML's keys are the job's option names (dashes or underscores), its values
become the parser's defaults, and flags given on the command line still win. Unknown keys fail loudly, and every value
passes the same ``type`` and ``choices`` checks as the flag it stands for. :func:`number` and its instances are the
argparse types for numeric options: finite, and in range where the range matters.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import yaml

from n2m.errors import UserError

_PRIVATE = ("func", "_parser", "config", "verbose", "help")


def leaf(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int | None]) -> None:
    """Make ``parser`` a runnable job: it takes ``--config`` and ``--verbose`` and dispatches to ``run(args)``.

    A bad flag (unknown option, wrong type, invalid choice, missing value) is reported like every other user mistake:
    one line ``n2m JOB: error: ...`` on stderr and exit code 2, without argparse's usage block.
    """
    parser.add_argument("--config", metavar="YAML", help="YAML file of option values; command-line flags override it")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details and show tracebacks on errors")
    parser.set_defaults(func=run, _parser=parser)
    job = " ".join(parser.prog.split()[:2])

    def one_line_error(message: str) -> NoReturn:
        sys.stderr.write(f"{job}: error: {message} (see {parser.prog} --help)\n")
        sys.exit(2)

    parser.error = one_line_error  # type: ignore[method-assign]


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
    """Re-parse ``argv`` with the YAML file of ``args.config`` as defaults of the job's own parser.

    Every value goes through its option's own ``type`` and ``choices``, as if it had been given on the command line
    (a YAML scalar is read as the text a flag would carry); on/off flags take ``true`` or ``false``; options that take
    several values (``nargs``, ``append``) take a list or one value; ``null`` leaves the option unset.
    """
    if not getattr(args, "config", None):
        return args
    parser: argparse.ArgumentParser = args._parser
    actions = {action.dest: action for action in parser._actions}
    values = {}
    for key, value in load_yaml(args.config).items():
        dest = str(key).replace("-", "_")
        if dest not in actions or dest in _PRIVATE:
            raise UserError(f"config {args.config}: unknown option {key!r}")
        values[dest] = config_value(actions[dest], value, f"config {args.config}: {key}")
    parser.set_defaults(**values)
    return root.parse_args(argv)


def config_value(action: argparse.Action, value: Any, where: str) -> Any:
    """A YAML value for ``action``, converted and checked like the command line would (one-line error otherwise)."""
    if value is None:
        return None
    if action.nargs == 0:  # store_true and friends
        if not isinstance(value, bool):
            raise UserError(f"{where}: takes true or false, got {value!r}")
        return value
    many = isinstance(action, argparse._AppendAction) or action.nargs in ("+", "*", argparse.REMAINDER) or (
        isinstance(action.nargs, int) and action.nargs > 1)
    if many:
        return [_one_value(action, item, where) for item in (value if isinstance(value, list) else [value])]
    return _one_value(action, value, where)


def _one_value(action: argparse.Action, value: Any, where: str) -> Any:
    if isinstance(value, (list, dict)):
        raise UserError(f"{where}: takes a single value, got {type(value).__name__} {value!r}")
    text = str(value).lower() if isinstance(value, bool) else str(value)
    convert = action.type if callable(action.type) else str
    try:
        converted = convert(text)
    except argparse.ArgumentTypeError as err:
        raise UserError(f"{where}: {err}") from None
    except (TypeError, ValueError):
        raise UserError(f"{where}: invalid {getattr(convert, '__name__', 'value')} value {text!r}") from None
    if action.choices is not None and converted not in action.choices:
        raise UserError(f"{where}: invalid choice {converted!r} (choose from {', '.join(map(str, action.choices))})")
    return converted


# ---------------------------------------------------------------------------------------------------------------------
# Number options: argparse types that refuse NaN, infinities and out-of-range values with a one-line message


def number(kind: type = float, low: float | None = None, high: float | None = None,
           low_open: bool = False, high_open: bool = False) -> Callable[[Any], int | float]:
    """A parser for a finite ``kind`` (int or float) in ``[low, high]`` (open at an end with ``low_open`` or
    ``high_open``).

    Use it as an argparse ``type`` (it raises :class:`argparse.ArgumentTypeError`) or call it on any value.
    """
    if low is None and high is None:
        want = "a finite number" if kind is float else "an integer"
    elif high is None:
        want = f"{'a number' if kind is float else 'an integer'} {'>' if low_open else '>='} {low:g}"
    elif low is None:
        want = f"{'a number' if kind is float else 'an integer'} {'<' if high_open else '<='} {high:g}"
    else:
        want = (f"{'a number' if kind is float else 'an integer'} in {'(' if low_open else '['}{low:g}, {high:g}"
                f"{')' if high_open else ']'}")

    def parse(value: Any) -> int | float:
        try:
            if isinstance(value, bool):
                raise ValueError
            out = int(value) if kind is int and not isinstance(value, float) else kind(value)
            if kind is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
        except (TypeError, ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"expected {want}, got {value!r}") from None
        bad = not math.isfinite(out) or (low is not None and (out <= low if low_open else out < low)) or (
            high is not None and (out >= high if high_open else out > high))
        if bad:
            raise argparse.ArgumentTypeError(f"expected {want}, got {value!r}")
        return out

    parse.__name__ = want
    return parse


POSITIVE_INT = number(int, low=1)
NONNEGATIVE_INT = number(int, low=0)
POSITIVE = number(float, low=0, low_open=True)
NONNEGATIVE = number(float, low=0)
FRACTION = number(float, low=0, high=1)
FINITE = number(float)


def checked(value: Any, parse: Callable[[Any], Any], what: str) -> Any:
    """``parse(value)`` with a one-line :class:`UserError` naming ``what`` (for values that bypass argparse)."""
    try:
        return parse(value)
    except argparse.ArgumentTypeError as err:
        raise UserError(f"{what}: {err}") from None


def resolved(args: argparse.Namespace) -> dict[str, Any]:
    """The job's options as a plain dict (for ``--dry-run`` and the config recorded in every artifact)."""
    out = {}
    for key, value in vars(args).items():
        if key in _PRIVATE or key.startswith("_"):
            continue
        out[key] = str(value) if isinstance(value, Path) else value
    return out
