"""The labelling jobs as Python functions of their typed settings, without argparse: ``n2m label``
(n2m.labeling.label_job), ``n2m vocab aspects`` and ``n2m label-eval`` write what their command lines write; each
settings dataclass is checked once, at construction."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import CAPTIONS, write_build, write_vocab

from n2m.cli import main
from n2m.errors import UserError
from n2m.labeling.label_eval import LabelEvalSettings, run_label_eval
from n2m.labeling.label_job import LabelJobSettings, run_label
from n2m.labeling.vocab.aspects import AspectsSettings, run_aspects

IN_MEMORY = "--direct_running_mode=in_memory"


def _labels(label_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(label_dir.glob("*.parquet"))}


def test_label_aspects_and_label_eval_from_python_write_what_the_cli_writes(tmp_path, micro_clap_dir, capsys):
    shards = {"train": [[{"uri": f"/music/a{i}.wav", "seconds": 6, "freq": 220 * (i + 1)} for i in range(3)]]}
    write_build(tmp_path / "out", shards)
    long = write_vocab(tmp_path / "long.parquet", CAPTIONS, "long")
    assert run_aspects(AspectsSettings(out=str(tmp_path / "aspects.parquet"))) == 0
    assert main(["vocab", "aspects", "--out", str(tmp_path / "aspects_cli.parquet")]) == 0
    tables = [pq.read_table(tmp_path / f"aspects{s}.parquet") for s in ("", "_cli")]
    assert tables[0].equals(tables[1]) and tables[0].num_rows > 100

    vocabs = [long, str(tmp_path / "aspects.parquet")]
    settings = LabelJobSettings(build=str(tmp_path / "out"), vocab=vocabs, joint_model=micro_clap_dir, name="py",
                                k=4, k_prime="2,3", beam_args=[IN_MEMORY], quiet=True)
    assert run_label(settings) == 0
    assert main(["label", "--build", str(tmp_path / "out"), *[a for v in vocabs for a in ("--vocab", v)],
                 "--joint-model", micro_clap_dir, "--name", "cli", "--k", "4", "--k-prime", "2,3", "--quiet",
                 "--", IN_MEMORY]) == 0
    labels = tmp_path / "out" / "labels"
    assert _labels(labels / "py") == _labels(labels / "cli") and len(_labels(labels / "py")) == 1
    manifests = [json.loads((labels / name / "manifest.json").read_text()) for name in ("py", "cli")]
    assert {**manifests[0]["config"], "name": ""} == {**manifests[1]["config"], "name": ""}

    truth = tmp_path / "truth.jsonl"
    truth.write_text("".join(json.dumps({"path": f"/music/a{i}.wav", "style": "jazz"}) + "\n" for i in range(3)))
    capsys.readouterr()
    assert run_label_eval(LabelEvalSettings(labels=str(labels / "py"), truth=str(truth), out=str(tmp_path / "e.json")))\
        == 0
    printed = capsys.readouterr().out
    assert main(["label-eval", "--labels", str(labels / "py"), "--truth", str(truth)]) == 0
    assert capsys.readouterr().out == printed.replace(f"n2m label-eval: wrote {tmp_path / 'e.json'}\n", "")
    assert json.loads((tmp_path / "e.json").read_text())["subsets"]["all"]["clips"] == 3


@pytest.mark.parametrize(("make", "message"), [
    (lambda: LabelJobSettings(build="b", vocab=["v"], joint_model="m", name="../up"), "--name"),
    (lambda: LabelEvalSettings(labels="l", truth="t", tempo_bounds="100,76"), "--tempo-bounds '100,76'"),
    (lambda: AspectsSettings(), "missing --out"),
])
def test_labelling_settings_are_checked_at_construction(make, message):
    with pytest.raises(UserError, match=message):
        make()
