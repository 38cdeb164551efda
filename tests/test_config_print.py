"""``n2m JOB --print-config`` for every job: the resolved settings as YAML that ``--config`` reads back unchanged;
``--config`` can give required options, and its values get the same checks (types, choices, one-line errors) as flags.

Every runnable parser of every job is exercised with every option set away from its default, so a new option or job
is covered without editing this file; the printed values are checked against argparse's own parse of the flags."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from n2m.cli import COMMANDS, build_parser, main

# what every runnable parser has besides the job's own options, and prints no setting for
FRONT_DOOR = {"config", "print_config", "verbose", "help", "func", "_parser"}
CANDIDATES = ("3", "0.5", "1", "v1")  # tried in order; the first one the option's type takes and that is not the default


def leaves(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The runnable parsers under ``parser`` (those :func:`n2m.config.leaf` made)."""
    found = [parser] if "func" in parser._defaults else []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += leaves(child)
    return found


def value_for(action: argparse.Action) -> str:
    """A command-line value for ``action`` that its type and choices accept and that differs from its default."""
    if action.choices:
        return next(str(c) for c in action.choices if c != action.default)
    convert = action.type if callable(action.type) else str
    for text in CANDIDATES:
        try:
            if convert(text) != action.default:
                return text
        except (argparse.ArgumentTypeError, TypeError, ValueError):
            continue
    raise AssertionError(f"no test value for {action.option_strings or action.dest}")


def every_option_set(parser: argparse.ArgumentParser) -> tuple[list[str], list[str]]:
    """(flags setting every option of ``parser`` away from its default, the positional values)."""
    flags: list[str] = []
    positionals = [value_for(a) for a in parser._actions if not a.option_strings]
    excluded = {id(a) for g in parser._mutually_exclusive_groups for a in g._group_actions[1:]}
    for action in parser._actions:
        if not action.option_strings or action.dest in FRONT_DOOR or id(action) in excluded:
            continue
        flags.append(action.option_strings[-1])
        if action.nargs != 0:
            flags.append(value_for(action))
    if "beam_args" in parser._defaults:
        flags.append("--direct_num_workers=2")
    return flags, positionals


def run(capsys, argv: list[str]) -> str:
    assert main(argv) == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("job", list(COMMANDS))
def test_print_config_round_trips_for_every_runnable_parser_of_every_job(job, tmp_path, capsys):
    root = build_parser({job: COMMANDS[job]})
    runnable = leaves(root)
    assert runnable, f"{job} has no runnable parser"
    for parser in runnable:
        words = parser.prog.split()[1:]
        flags, positionals = every_option_set(parser)
        printed = run(capsys, [*words, *positionals, *flags, "--print-config"])
        settings = yaml.safe_load(printed)
        expected = vars(root.parse_args([*words, *positionals, *flags]))  # argparse's own parse, no --config
        options = {a.dest for a in parser._actions} | set(parser._defaults)  # beam_args has no option
        assert set(settings) == options - FRONT_DOOR, parser.prog
        for dest, value in settings.items():
            want = expected[dest]
            want = str(want) if isinstance(want, Path) else list(want) if isinstance(want, tuple) else want
            assert value == want, f"{parser.prog}: {dest}"
        config = tmp_path / f"{'-'.join(words)}.yaml"
        config.write_text(printed)
        assert run(capsys, [*words, *positionals, "--config", str(config), "--print-config"]) == printed


def test_a_config_file_gives_the_required_options_and_flags_still_win(tmp_path, capsys):
    config = tmp_path / "build.yaml"
    config.write_text("input: music/\nout: out/\nclip-seconds: 10\nrunner: DirectRunner\n")
    settings = yaml.safe_load(run(capsys, ["build", "--config", str(config), "--clip-seconds", "5",
                                           "--print-config"]))
    assert (settings["input"], settings["out"], settings["clip_seconds"]) == ("music/", "out/", 5.0)
    assert settings["runner"] == "DirectRunner" and settings["sample_rate"] == 24000  # default kept


def test_an_option_neither_the_file_nor_the_flags_give_is_still_required(tmp_path, capsys):
    config = tmp_path / "build.yaml"
    config.write_text("input: music/\n")
    with pytest.raises(SystemExit) as done:
        main(["build", "--config", str(config), "--print-config"])
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2 and len(err.splitlines()) == 1
    assert "the following arguments are required: --out" in err and "--input" not in err


@pytest.mark.parametrize(("job", "flag", "key", "bad", "message"), [
    (["label"], "--k", "k", "0", "expected an integer >= 1, got '0'"),
    (["eval", "fad"], "--vggish-framing", "vggish_framing", "bogus", "invalid choice"),
])
def test_a_bad_value_is_the_same_one_line_error_from_a_file_as_from_a_flag(tmp_path, capsys, job, flag, key, bad,
                                                                           message):
    required = {"label": ["--build", "b", "--vocab", "v", "--joint-model", "m", "--name", "n"],
                "eval": ["--reference", "r", "--generated", "g", "--embedding", "musicnn"]}[job[0]]
    with pytest.raises(SystemExit) as done:
        main([*job, *required, flag, bad, "--print-config"])
    from_flag = capsys.readouterr().err.strip()
    config = tmp_path / "bad.yaml"
    config.write_text(f"{key}: {bad}\n")
    code = main([*job, *required, "--config", str(config), "--print-config"])
    from_file = capsys.readouterr().err.strip()
    assert done.value.code == code == 2
    for err in (from_flag, from_file):
        assert len(err.splitlines()) == 1 and err.startswith(f"n2m {job[0]}: error: ") and message in err
    assert f"config {config}: {key}: " in from_file


def test_a_flag_overrides_the_files_value_for_another_option_of_its_exclusive_group(tmp_path, capsys):
    config = tmp_path / "sample.yaml"
    required = ["--cascade", "waveform", "--checkpoints", "ck", "--out", "o"]
    config.write_text("prompts_file: prompts.txt\n")
    settings = yaml.safe_load(run(capsys, ["sample", *required, "--config", str(config), "--prompts", "a b",
                                           "--print-config"]))
    assert settings["prompts"] == ["a b"] and settings["prompts_file"] is None
    settings = yaml.safe_load(run(capsys, ["sample", *required, "--config", str(config), "--print-config"]))
    assert settings["prompts"] is None and settings["prompts_file"] == "prompts.txt"  # the file gives the group
    config.write_text("prompts_file: prompts.txt\nprompts: [a]\n")
    assert main(["sample", *required, "--config", str(config), "--print-config"]) == 2
    assert "prompts and prompts_file exclude each other" in capsys.readouterr().err


def test_a_repeated_flag_replaces_the_files_list_instead_of_extending_it(tmp_path, capsys):
    config = tmp_path / "label.yaml"
    config.write_text("build: b\nvocab: [long.parquet, short.parquet]\njoint-model: m\nname: n\n")
    settings = yaml.safe_load(run(capsys, ["label", "--config", str(config), "--print-config"]))
    assert settings["vocab"] == ["long.parquet", "short.parquet"]
    settings = yaml.safe_load(run(capsys, ["label", "--config", str(config), "--vocab", "mine.parquet",
                                           "--print-config"]))
    assert settings["vocab"] == ["mine.parquet"]
