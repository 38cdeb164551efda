"""Jobs apart from their CLIs (docs/architecture.md; issue 15 item 4): every runnable parser of every job runs a job
function of one typed settings dataclass, living outside the CLI modules, with a field (and the same default) for
each of the parser's settings; argparse itself appears in CLI modules only.

Every runnable parser is walked (as in tests/test_config_print.py), so a new job is checked without editing this file.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import json
from pathlib import Path

import pytest
from test_config_print import leaves

from n2m.cli import COMMANDS, build_parser, main
from n2m.config import job, job_function, resolved, setting_names, settings_from, settings_type
from n2m.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("n2m", "pipelines", "labeling", "training", "eval")


def is_cli_module(path: Path) -> bool:
    """A CLI module: ``cli.py``, ``*_cli.py`` or ``cli_*.py``; and the core's option machinery, ``n2m/config.py``."""
    return path.stem == "cli" or path.stem.endswith("_cli") or path.stem.startswith("cli_") or \
        path.relative_to(ROOT).as_posix() == "n2m/config.py"


def imports_argparse(path: Path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(node, ast.Import) and any(a.name == "argparse" for a in node.names)
               or isinstance(node, ast.ImportFrom) and node.module == "argparse" for node in ast.walk(tree))


@pytest.fixture(scope="module")
def runnable() -> list[argparse.ArgumentParser]:
    return leaves(build_parser())


def test_argparse_lives_in_the_cli_modules_only():
    found = {path.relative_to(ROOT).as_posix() for package in PACKAGES for path in (ROOT / package).rglob("*.py")
             if imports_argparse(path)}
    assert {"n2m/cli.py", "pipelines/cli.py", "eval/cli_options.py"} <= found  # the check sees the imports
    assert {path for path in found if not is_cli_module(ROOT / path)} == set()


def test_every_runnable_parser_runs_a_job_function_of_one_settings_dataclass(runnable):
    for parser in runnable:
        target = getattr(parser._defaults["func"], "target", None)
        assert target, f"{parser.prog} does not run a job function (n2m.config.job)"
        function = job_function(target)
        assert not is_cli_module(Path(inspect.getfile(function))), f"{parser.prog}: {target} lives in a CLI module"
        kind = settings_type(function)
        assert kind.__dataclass_params__.frozen, kind
        fields = {f.name.rstrip("_"): f for f in dataclasses.fields(kind)}
        assert set(setting_names(parser)) <= set(fields), parser.prog
        for action in parser._actions:
            field = fields.get(action.dest)
            if field is None or action.dest in ("help", "config", "print_config", "verbose"):
                continue
            if action.required:  # required on the command line: required from Python too
                assert field.default is dataclasses.MISSING and field.default_factory is dataclasses.MISSING, \
                    f"{parser.prog}: {action.dest}"
                continue
            default = field.default_factory() if field.default_factory is not dataclasses.MISSING else field.default
            assert default == action.default, f"{parser.prog}: {action.dest} defaults differ"


def test_the_design_documents_table_of_jobs_is_the_parsers(runnable):
    """docs/architecture.md section 2 lists every job once: its function, settings type and CLI module, as run."""
    section = (ROOT / "docs" / "architecture.md").read_text().split("## 2. ")[1].split("## 3. ")[0]
    rows = [[cell.strip().strip("`") for cell in line.split("|")[1:-1]] for line in section.splitlines()
            if line.startswith("| `n2m ")]
    documented = {prog: (target, kind, module) for prog, target, kind, module in rows}
    assert len(documented) == len(rows)  # no job twice
    running = {}
    for parser in runnable:
        target = parser._defaults["func"].target
        running[parser.prog] = (target, settings_type(job_function(target)).__name__,
                                COMMANDS[parser.prog.split()[1]][1])
    assert documented == running


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Settings:
    size: int
    from_: str = "a"
    verbose: bool = False


def _size_of(settings: _Settings, scale: int = 1) -> int:
    return settings.size * scale


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="n2m toy")
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--from", dest="from", default="a")
    parser.set_defaults(_parser=parser)
    return parser


def test_a_job_function_gets_its_settings_from_parsed_options_and_further_arguments():
    args = _parser().parse_args(["--size", "3", "--from", "b"])
    assert settings_from(args, _Settings) == _Settings(size=3, from_="b")  # a keyword's setting: from -> from_
    assert job(f"{__name__}:_size_of")(args, scale=2) == 6
    assert resolved(_Settings(size=3, from_="b", verbose=True)) == {"size": 3, "from": "b"}


def test_a_parsed_setting_without_its_field_is_refused():
    parser = _parser()
    parser.add_argument("--colour", default="red")
    with pytest.raises(TypeError, match="_Settings has no field for the setting.s. colour of n2m toy"):
        settings_from(parser.parse_args(["--size", "3"]), _Settings)


def test_a_job_function_must_say_its_settings_type():
    def untyped(settings, scale=1):
        return settings

    with pytest.raises(TypeError, match="not annotated with a dataclass"):
        settings_type(untyped)


# ---------------------------------------------------------------------------------------------------------------------
# The core's own jobs, called from Python


def test_synth_from_python_writes_what_the_cli_writes(tmp_path, capsys):
    from n2m.synth.job import SynthSettings, run_synth

    options = {"tracks": 2, "min_seconds": 2.0, "max_seconds": 3.0, "formats": "wav,flac", "seed": 3}
    assert run_synth(SynthSettings(out=tmp_path / "py", quiet=True, **options)) == 0
    quiet = capsys.readouterr()
    assert main(["synth", "--out", str(tmp_path / "cli"), "--tracks", "2", "--min-seconds", "2", "--max-seconds", "3",
                 "--formats", "wav,flac", "--seed", "3"]) == 0
    loud = capsys.readouterr()
    assert "synth: 2 tracks" in quiet.out and "track/s" in loud.err and "track/s" not in quiet.err  # quiet: no bar
    files = sorted(p.relative_to(tmp_path / "py").as_posix() for p in (tmp_path / "py").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "cli").as_posix() for p in (tmp_path / "cli").rglob("*")
                           if p.is_file()) and len(files) == 4  # 2 tracks, the manifest, synth.json
    for name in files:
        if name != "synth.json":  # its created time and timings differ
            assert (tmp_path / "py" / name).read_bytes() == (tmp_path / "cli" / name).read_bytes(), name
    configs = [json.loads((tmp_path / d / "synth.json").read_text())["config"] for d in ("py", "cli")]
    assert {**configs[0], "out": "", "quiet": None} == {**configs[1], "out": "", "quiet": None}
    assert configs[0]["tracks"] == 2


@pytest.mark.parametrize(("options", "message"), [
    ({}, "missing --out"),
    ({"out": Path("x"), "holdout": 1.0}, "--holdout must be a fraction in"),
    ({"out": Path("x"), "formats": "wav,aiff"}, "--formats takes a list from"),
])
def test_synth_settings_are_checked_once_without_argparse(options, message):
    from n2m.synth.job import SynthSettings

    with pytest.raises(UserError, match=message):
        SynthSettings(**options)


def test_models_list_from_python(tmp_path, capsys):
    from n2m.models.jobs import ModelsListSettings, run_models_list

    assert run_models_list(ModelsListSettings(dir=tmp_path)) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"models folder: {tmp_path}") and "model(s) missing" in out
