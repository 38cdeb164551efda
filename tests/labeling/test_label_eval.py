"""n2m label-eval: the matching rules, precision vs closed-form chance, CLAP score vs shuffled, and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import CAPTIONS, write_build, write_vocab

from n2m.cli import build_parser
from n2m.labeling.label_eval import aspect_precision, clap_scores, ratio_interval, tempo_class, text_matches

SHORT = {"genre": ["rock", "jazz", "ambient", "lo-fi hip hop"], "instrument": ["piano", "bass", "violin", "drums"],
         "mood": ["calm", "dark"], "tempo": ["slow", "fast tempo", "rubato"]}


def test_text_matching_rules():
    assert text_matches("lo-fi hip hop", ["lo-fi"])
    assert text_matches("bass", ["electric bass"])
    assert text_matches("drum", ["drums"])
    assert not text_matches("jazz", ["rock"])
    assert not text_matches("rocket", ["rock"])
    assert tempo_class(70, (76, 100)) == "slow" and tempo_class(99, (76, 100)) == "medium"
    assert tempo_class(100, (76, 100)) == "fast"


def test_precision_and_closed_form_chance():
    entries = {"style": SHORT["genre"], "instrument": SHORT["instrument"], "mood": SHORT["mood"],
               "tempo": SHORT["tempo"]}
    truth = {"a": {"style": "rock", "instruments": ["piano", "drums"], "mood": "calm", "bpm": 140},
             "b": {"style": "lo-fi", "instruments": ["electric bass"], "mood": "dark", "bpm": 70}}
    labels = {"a": ["rock", "jazz", "piano", "calm", "fast tempo", "rubato"],
              "b": ["lo-fi hip hop", "violin", "bass", "calm", "slow"]}
    out = aspect_precision(labels, truth, entries, (76, 100))
    # style: a -> rock (right), jazz (wrong); b -> lo-fi hip hop (right). chance a = 1/4, b = 1/4
    assert out["style"]["precision"] == pytest.approx(2 / 3) and out["style"]["chance"] == pytest.approx(0.25)
    assert out["style"]["ratio"] == pytest.approx(8 / 3)
    # instrument: a -> piano (right; chance 2/4); b -> violin (wrong), bass (right; chance 1/4)
    assert out["instrument"]["precision"] == pytest.approx(2 / 3)
    assert out["instrument"]["chance"] == pytest.approx((0.5 + 2 * 0.25) / 3)
    # mood: a calm right, b calm wrong; chance 1/2 each
    assert out["mood"]["precision"] == pytest.approx(0.5) and out["mood"]["chance"] == pytest.approx(0.5)
    # tempo: rubato unscored; a fast tempo right (chance 1/2 of the 2 scorable), b slow right
    assert out["tempo"]["captions"] == 2 and out["tempo"]["precision"] == 1.0
    assert out["tempo"]["chance"] == pytest.approx(0.5)


def test_an_aspect_without_entries_in_the_vocabulary_is_not_reported():
    truth = {"a": {"style": "rock", "instruments": ["piano"], "mood": "calm", "bpm": 140}}
    out = aspect_precision({"a": ["calm", "dark"]}, truth, {"mood": SHORT["mood"]}, (76, 100))
    assert set(out) == {"mood"}  # a mood-only vocabulary: no style, instrument or tempo rows
    assert out["mood"]["precision"] == pytest.approx(0.5) and out["mood"]["captions"] == 2


def test_ratio_interval_collapses_when_every_track_reads_the_same_ratio():
    # every resample of tracks whose right/expected is 2 has the ratio 2: the interval is the point
    low, high = ratio_interval(np.array([2.0, 4.0, 6.0]), np.array([1.0, 2.0, 3.0]))
    assert low == pytest.approx(2.0) and high == pytest.approx(2.0)
    assert ratio_interval(np.array([3.0]), np.array([1.0])) == (None, None)  # one track: no interval


def test_ratio_interval_matches_the_delta_method_on_many_tracks():
    # second method: the ratio estimator R = sum r / sum e has the delta-method standard error
    # sqrt(sum (r_t - R e_t)^2) / sum e (Cochran 1977, 6.3); with 2,000 tracks the bootstrap agrees with R +- 1.96 se
    rng = np.random.default_rng(7)
    expected = rng.uniform(0.05, 0.3, 2000)
    right = rng.poisson(3.0 * expected * rng.uniform(0.5, 1.5, 2000)).astype(float)
    ratio = right.sum() / expected.sum()
    se = np.sqrt(((right - ratio * expected) ** 2).sum()) / expected.sum()
    low, high = ratio_interval(right, expected, reps=4000)
    assert low == pytest.approx(ratio - 1.96 * se, abs=0.1 * se)
    assert high == pytest.approx(ratio + 1.96 * se, abs=0.1 * se)


def test_the_interval_resamples_tracks_not_clips():
    entries = {"mood": SHORT["mood"]}
    # two tracks of two clips each: track x always right, track y always wrong (chance 1/2 everywhere)
    truth = {k: {"track_id": k[0], "mood": "calm" if k[0] == "x" else "dark", "style": "", "bpm": 0}
             for k in ("x1", "x2", "y1", "y2")}
    out = aspect_precision({k: ["calm"] for k in truth}, truth, entries, (76, 100))["mood"]
    assert out["clips"] == 4 and out["tracks"] == 2 and out["ratio"] == pytest.approx(1.0)
    # a resample holds 0, 1 or 2 copies of x: ratios 0, 1, 2 with probabilities 1/4, 1/2, 1/4
    assert out["ratio_low"] == pytest.approx(0.0) and out["ratio_high"] == pytest.approx(2.0)
    one = aspect_precision({"x1": ["calm"], "x2": ["calm"]}, truth, entries, (76, 100))["mood"]
    assert one["tracks"] == 1 and one["ratio_low"] is None and one["ratio_high"] is None


def test_clap_scores_against_hand_vectors():
    audio = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0])}
    text = np.array([[1.0, 0.0], [0.0, 1.0]])
    out = clap_scores(["a", "b"], {"a": ["x"], "b": ["y"]}, audio, {"x": 0, "y": 1}, text)
    assert out["assigned"] == pytest.approx(1.0) and out["shuffled"] == pytest.approx(0.0)


def test_cli_end_to_end(tmp_path, micro_clap_dir, capsys):
    rows, clips = [], []
    for i in range(6):
        path = f"audio/t{i}.wav"
        rows.append({"path": path, "caption": CAPTIONS[i], "style": ["rock", "jazz"][i % 2], "mood": "calm",
                     "instruments": ["piano"], "bpm": 60 + 20 * i, "holdout": i >= 4})
        clips.append({"uri": str(tmp_path / "corpus" / path), "seconds": 10, "freq": 200 + 40 * i})
    write_build(tmp_path / "out", {"train": [clips]})
    (tmp_path / "corpus").mkdir()
    manifest = tmp_path / "corpus" / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    texts = [t for v in SHORT.values() for t in v]
    aspects = [a for a, v in SHORT.items() for _ in v]
    short = write_vocab(tmp_path / "aspects.parquet", texts, "short", aspects)
    long = write_vocab(tmp_path / "long.parquet", CAPTIONS, "long")
    parser = build_parser({"label": ("x", "n2m.labeling.cli"), "label-eval": ("x", "n2m.labeling.label_eval_cli")})
    args = parser.parse_args(["label", "--build", str(tmp_path / "out"), "--vocab", short, "--vocab", long, "--model",
                              micro_clap_dir, "--name", "v1", "--k", "6", "--", "--direct_running_mode=in_memory"])
    assert args.func(args) == 0
    report_path = tmp_path / "report.json"
    args = parser.parse_args(["label-eval", "--labels", str(tmp_path / "out" / "labels" / "v1"), "--truth",
                              str(manifest), "--json", str(report_path)])
    assert args.func(args) == 0
    report = json.loads(report_path.read_text())
    assert set(report["subsets"]) == {"all", "holdout"}
    assert report["subsets"]["all"]["clips"] == 6 and report["subsets"]["holdout"]["clips"] == 2
    style = report["subsets"]["all"]["aspects"]["aspects"]["style"]
    assert style["chance"] == pytest.approx(0.25)  # one of the four genre entries is right for each clip
    assert report["subsets"]["all"]["clap_score"]["long"]["clips"] == 6
    assert "precision" in capsys.readouterr().out
