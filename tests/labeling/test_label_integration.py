"""The real chain through the n2m CLI: synth -> build -> vocab aspects -> clap-train -> label -> label-eval.

Runs ``n2m label`` with its default runner (DirectRunner, multi_processing workers), so the Beam job, the worker
processes and every file contract are exercised as a user would run them.
"""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from n2m.cli import main
from n2m.schema import LABELS_SCHEMA, read_label_captions


@pytest.mark.integration
def test_synth_build_train_label_eval(tmp_path, capfd):
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    assert main(["synth", "--out", str(corpus), "--tracks", "8", "--seed", "3", "--min-seconds", "11",
                 "--max-seconds", "12", "--holdout", "0.25", "--formats", "flac,wav"]) == 0
    assert main(["build", "--input", str(corpus / "manifest.jsonl"), "--output", str(out), "--clip-seconds", "10",
                 "--split", "train=1.0", "--no-progress"]) == 0
    assert main(["vocab", "aspects", "--out", str(tmp_path / "aspects.parquet")]) == 0
    clap = tmp_path / "clap"
    assert main(["clap-train", "--build", str(out), "--captions", str(corpus / "manifest.jsonl"), "--out", str(clap),
                 "--preset", "micro", "--max-steps", "10", "--batch-size", "4", "--warmup", "2"]) == 0
    assert json.loads((clap / "train.json").read_text())["holdout_tracks"] == 2
    assert main(["label", "--build", str(out), "--vocab", str(tmp_path / "aspects.parquet"), "--model", str(clap),
                 "--name", "v1", "--", "--direct_num_workers=2"]) == 0
    err = capfd.readouterr().err  # the worker processes' own output goes to a log unless --verbose
    assert "apitools" not in err and "WARNING:root" not in err
    label_dir = out / "labels" / "v1"
    manifest = json.loads((label_dir / "manifest.json").read_text())
    index = pq.read_table(out / "index.parquet")
    assert manifest["counts"]["labelled"] == index.num_rows and manifest["counts"]["failed"] == 0
    tables = sorted(label_dir.glob("*.parquet"))
    assert tables and all(pq.read_schema(t).remove_metadata() == LABELS_SCHEMA for t in tables)
    captions = read_label_captions(str(label_dir))
    assert set(captions) == set(index["key"].to_pylist())
    assert all(len(c["short"]) == 6 for c in captions.values())
    report = tmp_path / "eval.json"
    assert main(["label-eval", "--labels", str(label_dir), "--truth", str(corpus / "manifest.jsonl"),
                 "--json", str(report)]) == 0
    result = json.loads(report.read_text())["subsets"]
    assert result["all"]["clips"] == index.num_rows and result["holdout"]["clips"] > 0
    assert result["all"]["aspects"]["aspects"]["style"]["chance"] > 0
    # a second run is a no-op resume (every shard skipped by its digest)
    before = {p: p.stat().st_mtime_ns for p in tables}
    assert main(["label", "--build", str(out), "--vocab", str(tmp_path / "aspects.parquet"), "--model", str(clap),
                 "--name", "v1", "--", "--direct_num_workers=2"]) == 0
    assert {p: p.stat().st_mtime_ns for p in tables} == before
    capfd.readouterr()
