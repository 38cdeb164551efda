"""YAML config files with command-line overrides, shared by every ``n2m`` job.

A job's parser takes ``--config FILE``: the YAML's keys are the job's option names (dashes or underscores), its values
become the parser's defaults, and flags given on the command line still win. The file can supply required options.
Unknown keys fail loudly, and every value passes the same ``type`` and ``choices`` checks as the flag it stands for.
``--print-config`` prints the resolved settings (defaults, then the file, then the flags) as YAML that ``--config``
reads back to the same settings. :func:`number` and its instances are the argparse types for numeric options: finite,
and in range where the range matters.

A job itself is a function of its typed settings (a dataclass whose fields are the job's options, in a module apart
from its CLI): :func:`job` makes the CLI's run function that builds those settings from the parsed options
(:func:`settings_from`) and calls it, so the job runs the same from Python without argparse.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import inspect
import keyword
import math
import sys
import typing
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import yaml

from n2m.errors import UserError

_PRIVATE = ("func", "_parser", "config", "print_config", "verbose", "help")
S = TypeVar("S")


def leaf(parser: argparse.ArgumentParser, run: Callable[[argparse.Namespace], int | None]) -> None:
    """Make ``parser`` a runnable job: it takes ``--config``, ``--print-config`` and ``--verbose`` and dispatches to
    ``run(args)``.

    A bad flag (unknown option, wrong type, invalid choice, missing value) is reported like every other user mistake:
    one line ``n2m JOB: error: ...`` on stderr and exit code 2, without argparse's usage block.
    """
    parser.add_argument("--config", metavar="YAML",
                        help="YAML file of option values (it may give required options); command-line flags override it")
    parser.add_argument("--print-config", action="store_true",
                        help="print the resolved settings (defaults, --config, flags) as YAML that --config accepts, "
                             "and exit without doing any work")
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


def parse_args(root: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """Parse ``argv`` with the ``n2m`` parser ``root``, the job's ``--config`` YAML (if any) giving its defaults.

    A first pass, with every required option optional, finds the job's parser and its ``--config``; the second pass
    (:func:`apply_config`) requires only the options the YAML did not give, so argparse reports the ones still missing.
    A request for help is parsed once, as it is, so the usage it prints marks the required options.
    """
    if _asks_for_help(argv):
        return root.parse_args(argv)
    with _optional(_required(root)):
        first = root.parse_args(argv)
    if not getattr(first, "config", None):
        return root.parse_args(argv)
    return apply_config(root, first, argv)


def apply_config(root: argparse.ArgumentParser, args: argparse.Namespace, argv: list[str]) -> argparse.Namespace:
    """Re-parse ``argv`` with the YAML file of ``args.config`` as defaults of the job's own parser.

    Every value goes through its option's own ``type`` and ``choices``, as if it had been given on the command line
    (a YAML scalar is read as the text a flag would carry); on/off flags take ``true`` or ``false``; options that take
    several values (``nargs``, ``append``) take a list or one value; ``null`` leaves the option unset. An option the
    YAML gives a value is no longer required on the command line. A flag replaces the file's value: a repeatable
    option's whole list, and the file's value for the other options of its mutually exclusive group. Keys the parser
    sets without an option (Beam's pass-through flags, ``beam_args``) take a list of strings. A key may also be a
    flag's older spelling (``output`` for ``--out``): it names the same setting, so files written before a rename work.
    """
    if not getattr(args, "config", None):
        return args
    parser: argparse.ArgumentParser = args._parser
    actions = {action.dest: action for action in parser._actions}
    values = {}
    for key, value in load_yaml(args.config).items():
        dest = str(key).replace("-", "_")
        where = f"config {args.config}: {key}"
        spelled = parser._option_string_actions.get("--" + str(key).replace("_", "-"))
        if dest not in actions and spelled is not None:  # an older spelling of a flag (a hidden alias) names its setting
            dest = spelled.dest
        if dest in _PRIVATE or (dest not in actions and dest not in parser._defaults):
            raise UserError(f"config {args.config}: unknown option {key!r}")
        values[dest] = config_value(actions[dest], value, where) if dest in actions else _strings(value, where)
    before = {action.dest: action.default for action in parser._actions}
    given = {dest for dest, value in values.items() if value is not None and value != before.get(dest)}
    parser.set_defaults(**values)
    with _optional(_required(parser, given)):
        out = root.parse_args(argv)
    for action in parser._actions:  # argparse would append the flags' values to the file's list
        if isinstance(action, argparse._AppendAction) and getattr(args, action.dest) != before[action.dest]:
            setattr(out, action.dest, getattr(args, action.dest))
    for group in parser._mutually_exclusive_groups:  # argparse checks the command line only
        on_command_line = [a for a in group._group_actions if getattr(args, a.dest) != before[a.dest]]
        from_file = [a for a in group._group_actions if a.dest in given and a not in on_command_line]
        if on_command_line:  # a flag wins over the file's value for another option of its group
            for action in from_file:
                setattr(out, action.dest, before[action.dest])
        elif len(from_file) > 1:
            names = " and ".join(a.dest for a in from_file)
            raise UserError(f"config {args.config}: {names} exclude each other")
    return out


def settings_yaml(args: argparse.Namespace) -> str:
    """The job's resolved settings as YAML that ``--config`` reads back to the same settings (``--print-config``).

    One key per option of the job's parser (its ``dest``, in the parser's order), then the values the parser sets
    without an option (``beam_args``); paths are written as text, tuples as lists.
    """
    settings = {dest: _plain(getattr(args, dest)) for dest in setting_names(args._parser) if hasattr(args, dest)}
    return yaml.safe_dump(settings, sort_keys=False, allow_unicode=True, width=1 << 16)


def setting_names(parser: argparse.ArgumentParser) -> list[str]:
    """The settings a job's parser gives, in its order: each option's ``dest``, then the values it sets without an
    option (``beam_args``); the front door's own (``--config``, ``--print-config``, ``--verbose``) left out."""
    dests = [a.dest for a in parser._actions if a.dest != argparse.SUPPRESS and a.default != argparse.SUPPRESS]
    dests += [dest for dest in parser._defaults if dest not in dests]
    return [dest for dest in dests if dest not in _PRIVATE and not dest.startswith("_")]


# ---------------------------------------------------------------------------------------------------------------------
# Jobs: functions of typed settings


def job(target: str) -> Callable[..., int | None]:
    """The run function a CLI gives :func:`leaf` for the job function ``target`` (``"package.module:function"``).

    The job function's first parameter is the job's settings, annotated with its dataclass. Called with the parsed
    options (and any further arguments, passed on), the run function imports the job's module (when the job runs,
    never for ``--help``), builds the settings with :func:`settings_from` and returns ``function(settings, ...)``.
    """

    def run(args: argparse.Namespace, *more: Any, **options: Any) -> int | None:
        function = job_function(target)
        return function(settings_from(args, settings_type(function)), *more, **options)

    run.target = target  # type: ignore[attr-defined]
    run.__doc__ = f"Run {target} with the settings of the parsed options."
    return run


def job_function(target: str) -> Callable[..., Any]:
    """The function ``"package.module:function"`` names (its module imported)."""
    module, _, name = target.partition(":")
    return getattr(importlib.import_module(module), name)


def settings_type(function: Callable[..., Any]) -> type:
    """The settings dataclass a job function takes: its first parameter's annotation."""
    first = next(iter(inspect.signature(function).parameters))
    kind = typing.get_type_hints(function).get(first)
    if not (isinstance(kind, type) and dataclasses.is_dataclass(kind)):
        raise TypeError(f"{function.__qualname__}: its first parameter {first!r} is not annotated with a dataclass")
    return kind


def settings_from(args: argparse.Namespace, kind: type[S]) -> S:
    """``kind`` (a job's settings dataclass) from the parsed options: each field takes the option of its name, a field
    no option sets keeps its default. Every setting of the job's parser (:func:`setting_names`) must have its field, so
    none is dropped on the way (a programming error, raised as :class:`TypeError`)."""
    names = {_setting(f.name): f.name for f in dataclasses.fields(kind) if f.init}  # type: ignore[arg-type]
    parser = getattr(args, "_parser", None)
    missing = [dest for dest in (setting_names(parser) if parser is not None else []) if dest not in names]
    if missing:
        raise TypeError(f"{kind.__name__} has no field for the setting(s) {', '.join(missing)} of {parser.prog}")
    return kind(**{name: getattr(args, dest) for dest, name in names.items() if hasattr(args, dest)})


def _setting(name: str) -> str:
    """The setting a field stands for: its name, less the ``_`` a Python keyword takes as a name (``from_``)."""
    return name[:-1] if name.endswith("_") and keyword.iskeyword(name[:-1]) else name


def require(settings: Any, *names: str) -> None:
    """Settings a job needs that its parser cannot require (a one-line :class:`UserError` naming their flags)."""
    missing = [f"--{_setting(n).replace('_', '-')}" for n in names if getattr(settings, n, None) in (None, "")]
    if missing:
        raise UserError(f"missing {', '.join(missing)} (give it on the command line or in --config)")


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _strings(value: Any, where: str) -> list[str]:
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(item, str) for item in items):
        raise UserError(f"{where}: takes a list of strings, got {value!r}")
    return items


def _asks_for_help(argv: list[str]) -> bool:
    head = argv[:argv.index("--")] if "--" in argv else argv
    return "-h" in head or "--help" in head


def _required(parser: argparse.ArgumentParser, dests: Iterable[str] | None = None) -> list[Any]:
    """The required options and required mutually exclusive groups of ``parser`` and the parsers below it (only those
    whose options are among ``dests`` when given)."""
    wanted = None if dests is None else set(dests)
    found: list[Any] = []
    seen: set[int] = set()

    def walk(p: argparse.ArgumentParser) -> None:
        if id(p) in seen:
            return
        seen.add(id(p))
        for action in p._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    walk(child)
            elif action.required and action.option_strings and (wanted is None or action.dest in wanted):
                found.append(action)
        found.extend(group for group in p._mutually_exclusive_groups if group.required and (
            wanted is None or any(a.dest in wanted for a in group._group_actions)))

    walk(parser)
    return found


@contextlib.contextmanager
def _optional(items: list[Any]) -> Iterator[None]:
    """Within the block, the given options and groups are not required."""
    for item in items:
        item.required = False
    try:
        yield
    finally:
        for item in items:
            item.required = True


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
MAX_SAMPLE_RATE = 384_000  # the highest rate common audio interfaces and codecs offer
SAMPLE_RATE = number(int, low=1, high=MAX_SAMPLE_RATE)


def checked(value: Any, parse: Callable[[Any], Any], what: str) -> Any:
    """``parse(value)`` with a one-line :class:`UserError` naming ``what`` (for values that bypass argparse)."""
    try:
        return parse(value)
    except argparse.ArgumentTypeError as err:
        raise UserError(f"{what}: {err}") from None


def resolved(settings: Any) -> dict[str, Any]:
    """A job's settings (its settings dataclass) as a plain dict, for ``--dry-run`` and the config recorded in every
    artifact: one key per field in the field order, paths as text, ``verbose`` left out."""
    out = {}
    for item in dataclasses.fields(settings):
        if item.name in _PRIVATE or item.name.startswith("_"):
            continue
        value = getattr(settings, item.name)
        out[_setting(item.name)] = str(value) if isinstance(value, Path) else value
    return out
