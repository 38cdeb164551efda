"""One flag vocabulary across the jobs (docs/architecture.md, section 6): no job's ``--help`` shows a spelling the
vocabulary retired, and every retired spelling still parses to the same settings as the vocabulary's.

Every runnable parser of every job is walked (as in tests/test_config_print.py), so a new job is checked without
editing this file. The table below is this test's own statement of what was renamed; the parsers and the document
must both agree with it."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import yaml
from test_config_print import every_option_set, leaves, value_for

from n2m.cli import COMMANDS, build_parser, main, old_spellings
from n2m.config import job_function

DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"

# parser -> {retired spelling: the vocabulary's spelling}
RETIRED = {
    "n2m build": {"--output": "--out", "--threads": "--decode-threads", "--no-progress": "--quiet"},
    "n2m label": {"--model": "--joint-model"},
    "n2m label-eval": {"--json": "--out"},
    "n2m clap convert": {"--force": "--overwrite"},
    "n2m clap-train": {"--init": "--joint-model", "--force": "--overwrite"},
    "n2m eval clap-score": {"--model": "--joint-model"},
    "n2m eval musiccaps": {"--clap": "--joint-model"},
}
NOWHERE = {"--output", "--json", "--force", "--no-progress", "--clap", "--init"}  # retired in every job
LLM_MODEL = {"n2m vocab generate"}  # its --model names the LLM's model, not a joint model

# Every job writes to --out but these, which write nowhere or where another flag says
NO_OUT = {
    "n2m vocab show": "prints a vocabulary's summary",
    "n2m models list": "prints what is installed",
    "n2m models fetch": "fills the models folder every job reads (--dir)",
    "n2m label": "writes BUILD/labels/NAME: a label set lives in the build it labels (--build, --name)",
}
# Every job draws progress bars, and so takes --quiet, but these short ones
NO_PROGRESS = {"n2m vocab aspects", "n2m vocab show", "n2m clap convert", "n2m label-eval", "n2m export",
               "n2m eval prompts", "n2m eval compare", "n2m models fetch", "n2m models list"}
# The jobs that keep what an earlier run wrote (refuse, resume or skip it) unless --overwrite; the others replace
# their outputs (a report, a vocabulary, an export) whenever they run, so the flag would change nothing
KEEPS_EARLIER_OUTPUT = {"n2m build", "n2m label", "n2m clap convert", "n2m clap-train", "n2m sample"}


@pytest.fixture(scope="module")
def runnable() -> dict[str, argparse.ArgumentParser]:
    return {parser.prog: parser for parser in leaves(build_parser())}


def visible(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {spelling: action for action in parser._actions for spelling in action.option_strings}


def hidden(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    shown = visible(parser)
    return {spelling: action for spelling, action in parser._option_string_actions.items() if spelling not in shown}


def mentions(text: str, flag: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text) is not None


def test_no_job_shows_a_spelling_the_vocabulary_retired(runnable):
    assert {prog.split()[1] for prog in runnable} == set(COMMANDS)
    for prog, parser in runnable.items():
        shown = visible(parser)
        assert not NOWHERE & set(shown), prog
        if prog not in LLM_MODEL:
            assert "--model" not in shown, prog
        if "--threads" in shown:  # the vocabulary's --threads is torch's
            assert "torch" in shown["--threads"].help, prog
        text = parser.format_help()
        for old in RETIRED.get(prog, {}):
            assert not mentions(text, old), f"{prog} --help mentions {old}"


def test_every_job_takes_out_quiet_and_overwrite_where_they_mean_something(runnable):
    """``--out`` for what a job writes, ``--quiet`` for every job that draws progress bars, ``--overwrite`` for
    every job that otherwise keeps an earlier run's output: the tables above, each exception with its reason."""
    progs = set(runnable)
    assert set(NO_OUT) | NO_PROGRESS | KEEPS_EARLIER_OUTPUT <= progs  # no stale entry
    for prog, parser in runnable.items():
        shown = visible(parser)
        assert ("--out" in shown) == (prog not in NO_OUT), prog
        assert ("--quiet" in shown) == (prog not in NO_PROGRESS), prog
        assert ("--overwrite" in shown) == (prog in KEEPS_EARLIER_OUTPUT), prog
        if "--quiet" in shown:
            assert shown["--quiet"].nargs == 0 and "progress" in shown["--quiet"].help, prog
            # every bar drawn while the job runs (n2m.progress.bar, in any module) obeys it, not only the job's own
            assert getattr(job_function(parser._defaults["func"].target), "honours_quiet", False), prog
        if "--overwrite" in shown:
            assert shown["--overwrite"].nargs == 0, prog


def test_the_retired_spellings_are_exactly_the_tables_and_the_documents(runnable):
    found = {prog: {old: hidden(parser)[old].option_strings[0] for old in hidden(parser)}
             for prog, parser in runnable.items() if hidden(parser)}
    assert found == RETIRED
    section = DOC.read_text().split("## 6. Flag vocabulary")[1]
    rows = [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("|")]  # meaning, flag, retired
    documented = {(prog, old): flag.strip().strip("`").split()[0] for _, flag, olds in rows
                  for prog, old in re.findall(r"`(n2m [a-z -]+?) (--[a-z-]+)`", olds)}
    assert documented == {(prog, old): new for prog, renames in RETIRED.items() for old, new in renames.items()}


@pytest.mark.parametrize(("prog", "old", "new"),
                         [(prog, old, new) for prog, renames in RETIRED.items() for old, new in renames.items()])
def test_a_retired_spelling_gives_the_same_settings_as_the_vocabularys(runnable, prog, old, new, capsys):
    parser = runnable[prog]
    action = parser._option_string_actions[new]
    assert parser._option_string_actions[old] is action and action.option_strings == [new]
    flags, positionals = every_option_set(parser)
    if new not in flags:
        flags += [new] if action.nargs == 0 else [new, value_for(action)]
    with_old = [old if flag == new else flag for flag in flags]
    printed = []
    for argv in (flags, with_old):
        assert main([*prog.split()[1:], *positionals, *argv, "--print-config"]) == 0
        printed.append(capsys.readouterr().out)
    assert printed[0] == printed[1]
    settings = yaml.safe_load(printed[0])
    assert settings[action.dest] != action.default  # the flag was really given


def test_a_retired_spelling_is_required_under_the_vocabularys_name(capsys):
    with pytest.raises(SystemExit) as done:
        main(["build", "--input", "music/", "--print-config"])
    err = capsys.readouterr().err
    assert done.value.code == 2 and "required: --out" in err and "--output" not in err


def test_a_retired_spelling_cannot_take_a_name_already_in_use():
    parser = argparse.ArgumentParser()
    out = parser.add_argument("--out")
    parser.add_argument("--output")
    with pytest.raises(ValueError, match="--output already names an option"):
        old_spellings(parser, out, "--output")


@pytest.mark.parametrize("prog, old, new", [(p, o, n) for p, table in RETIRED.items() for o, n in table.items()])
def test_a_config_file_with_a_retired_key_gives_the_same_settings(runnable, prog, old, new, tmp_path, capsys):
    """A --config file written before a rename (``output: ...``) still names the setting the flag now sets."""
    parser = runnable[prog]
    action = parser._option_string_actions[new]
    flags, positionals = every_option_set(parser)
    if new not in flags:
        flags += [new] if action.nargs == 0 else [new, value_for(action)]
    assert main([*prog.split()[1:], *positionals, *flags, "--print-config"]) == 0
    settings = yaml.safe_load(capsys.readouterr().out)
    renamed = {(old.lstrip("-").replace("-", "_") if key == action.dest else key): value for key, value in settings.items()}
    config = tmp_path / "old.yaml"
    config.write_text(yaml.safe_dump(renamed))
    assert main([*prog.split()[1:], *positionals, "--config", str(config), "--print-config"]) == 0
    assert yaml.safe_load(capsys.readouterr().out) == settings
