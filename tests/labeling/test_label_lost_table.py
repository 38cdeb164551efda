"""``n2m label``'s final guard (labeling/cli.py ``run``): a shard whose label table is missing after the assignment
job although its tar is intact fails the job in one line that says to re-run, and the re-run completes the label set.
(The other branch, a damaged shard named in the error, is tested in tests/labeling/test_label_dask.py.)

On Beam's DirectRunner a work item either finishes or fails the whole pipeline, so the loss is injected where a
distributed runner loses it: the assignment DoFn's body reports one shard done without writing its table or marker.
"""

from __future__ import annotations

import json

from conftest import CAPTIONS, write_build, write_vocab

from n2m.cli import main
from n2m.labeling.job import AssignShard

SHORT = ["piano", "drums", "violin", "guitar", "synth", "jazz", "rock", "calm"]
LOST = "train-000001"


def test_a_missing_table_of_an_intact_shard_fails_the_job_in_one_line(tmp_path, micro_clap_dir, monkeypatch, capsys):
    out = tmp_path / "out"
    write_build(out, {"train": [[{"uri": "/music/a.wav", "seconds": 6, "freq": 220}],
                                [{"uri": "/music/b.wav", "seconds": 6, "freq": 330}]],
                      "valid": [[{"uri": "/music/c.wav", "seconds": 6, "freq": 440}]]})
    argv = ["label", "--build", str(out), "--vocab", write_vocab(tmp_path / "long.parquet", CAPTIONS, "long"),
            "--vocab", write_vocab(tmp_path / "short.parquet", SHORT, "short"), "--model", micro_clap_dir,
            "--k", "4", "--k-prime", "2,3", "--name", "v1", "--", "--direct_running_mode=in_memory"]
    assign = AssignShard.process

    def loses_one(self: AssignShard, ref) -> dict:
        return {"shard": ref.name} if ref.name == LOST else assign(self, ref)

    monkeypatch.setattr(AssignShard, "process", loses_one)
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (  # after the text-embedding progress bars
        f"n2m label: error: 1 shard(s) produced no labels: {LOST} failed during the job; re-run the same command to "
        "resume")
    label_dir = out / "labels" / "v1"
    manifest = json.loads((label_dir / "manifest.json").read_text())
    assert manifest["missing_shards"] == [LOST] and manifest["counts"]["shards_labelled"] == 2
    assert sorted(p.name for p in label_dir.glob("*.parquet")) == ["train-000000.parquet", "valid-000000.parquet"]

    monkeypatch.undo()  # the re-run the message asks for: the lost table is written, the others are kept
    kept = {name: (label_dir / name).read_bytes() for name in ("train-000000.parquet", "valid-000000.parquet")}
    assert main(argv) == 0
    assert sorted(p.name for p in label_dir.glob("*.parquet")) == [
        "train-000000.parquet", f"{LOST}.parquet", "valid-000000.parquet"]
    assert all((label_dir / name).read_bytes() == data for name, data in kept.items())
    manifest = json.loads((label_dir / "manifest.json").read_text())
    assert manifest["missing_shards"] == [] and manifest["counts"]["labelled"] == 3
