"""``n2m build`` as a Python function of its typed settings (n2m.pipelines.build_job), without argparse: the same shards,
tables and recorded config as the command line; the settings checked once, at construction."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import soundfile as sf
from build_helpers import music

from n2m.cli import main
from n2m.errors import UserError
from n2m.pipelines.build_job import BuildSettings, run_build

SR = 16000
OPTIONS = {"sample_rate": SR, "clip_seconds": 1.0, "split": "train=0.5,valid=0.5", "sources_per_shard": 2}
FLAGS = ["--sample-rate", str(SR), "--clip-seconds", "1", "--split", "train=0.5,valid=0.5", "--sources-per-shard", "2"]
IN_MEMORY = "--direct_running_mode=in_memory"  # one process: the runner mode does not change the output


def _files(out: Path) -> dict[str, bytes]:
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name not in ("build.json", "build.lock")}


def test_run_build_from_python_writes_what_the_cli_writes(tmp_path, capsys):
    src = tmp_path / "music"
    src.mkdir()
    for i in range(3):
        sf.write(src / f"t{i}.wav", music(2.5, SR, 1, seed=i).T, SR)
    settings = BuildSettings(input=str(src), out=str(tmp_path / "py"), quiet=True, beam_args=[IN_MEMORY], **OPTIONS)
    assert run_build(settings) == 0
    assert main(["build", "--input", str(src), "--out", str(tmp_path / "cli"), *FLAGS, "--quiet", "--", IN_MEMORY]) == 0
    assert capsys.readouterr().out.count("sources") >= 2  # both printed their summary
    python, cli = _files(tmp_path / "py"), _files(tmp_path / "cli")
    assert python == cli and any(name.endswith(".tar") for name in python)
    configs = [json.loads((tmp_path / d / "build.json").read_text())["config"] for d in ("py", "cli")]
    assert configs[0].pop("out").endswith("py") and configs[1].pop("out").endswith("cli")
    assert configs[0] == configs[1] and configs[0]["clip_seconds"] == 1.0


@pytest.mark.parametrize(("options", "message"), [
    ({"overwrite": True, "retry_failed": True}, "--overwrite and --retry-failed exclude each other"),
    ({"clip_seconds": 2.0, "min_clip_seconds": 3.0}, "--min-clip-seconds must be at most --clip-seconds"),
    ({"split": "train=0.5,valid=0.2"}, "--split"),
])
def test_build_settings_are_checked_at_construction(tmp_path, options, message):
    with pytest.raises(UserError, match=message):
        BuildSettings(input=str(tmp_path), out=str(tmp_path / "out"), **options)
