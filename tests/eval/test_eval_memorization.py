"""``n2m eval memorization``: the audio match against a direct loop over offsets, the split-conformal threshold against
its guarantee, and the real CLI on an ``n2m synth`` + ``n2m build`` corpus: copies of training clips (time-shifted,
re-encoded to MP3/Ogg) are flagged, excerpts of unseen tracks are not."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.stats

from n2m import audio
from n2m.cli import main
from n2m.eval import memorization_match as mm
from n2m.eval.memorization_match import MatchFrames, conformal_threshold, match_scores

# ---------------------------------------------------------------------------------------------------------------------
# Units


def _unit_frames(rng: np.random.Generator, length: int, dim: int = 12) -> np.ndarray:
    x = rng.standard_normal((length, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _direct(q: np.ndarray, r: np.ndarray, min_overlap: int) -> tuple[float, int]:
    """Best mean frame dot product over offsets by a plain loop (the definition, no FFT)."""
    need = min(min_overlap, math.ceil(min(len(q), len(r)) / 2))
    best, lag = -np.inf, 0
    for tau in range(-(len(q) - 1), len(r)):
        pairs = [(t, t + tau) for t in range(len(q)) if 0 <= t + tau < len(r)]
        if len(pairs) >= need:
            value = float(np.mean([np.dot(q[t].astype(np.float64), r[u]) for t, u in pairs]))
            if value > best:
                best, lag = value, tau
    return best, lag


@pytest.mark.parametrize("budget", [mm._PAIR_BUDGET, 40])
def test_match_scores_equal_a_direct_loop_over_offsets(budget, monkeypatch):
    """Every pair of queries and references of unequal lengths, in one block or in blocks of one reference."""
    monkeypatch.setattr(mm, "_PAIR_BUDGET", budget)
    rng = np.random.default_rng(0)
    queries = [_unit_frames(rng, n) for n in (7, 20, 33)]
    refs = [_unit_frames(rng, n) for n in (5, 20, 41, 64)]
    scores, lags = match_scores(queries, refs, min_overlap=8)
    for i, q in enumerate(queries):
        for j, r in enumerate(refs):
            best, lag = _direct(q, r, 8)
            assert scores[i, j] == pytest.approx(best, abs=1e-9) and lags[i, j] == lag


def test_match_finds_an_excerpt_at_its_offset_with_score_one():
    rng = np.random.default_rng(1)
    ref = _unit_frames(rng, 60)
    scores, lags = match_scores([ref[17:47], ref[:5]], [ref, _unit_frames(rng, 60)])
    assert scores[0, 0] == pytest.approx(1.0, abs=1e-6) and lags[0, 0] == 17
    assert scores[1, 0] == pytest.approx(1.0, abs=1e-6) and lags[1, 0] == 0
    assert scores[0, 1] < 0.5


def _melody(seed: int, seconds: float, sr: int = 24_000) -> np.ndarray:
    """Random harmonic notes (0.25 s each) over a soft noise floor, ``[1, T]``."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.25 * sr)) / sr
    notes = [sum(np.sin(2 * np.pi * 440 * 2 ** ((m - 69) / 12) * h * t) / h for h in range(1, 5))
             for m in rng.integers(55, 80, size=int(seconds * 4))]
    return (0.2 * np.concatenate(notes) + 0.01 * rng.standard_normal(len(notes) * len(t)))[None].astype(np.float32)


@pytest.mark.parametrize("fmt", ["MP3", "OGG"])
def test_match_frames_survive_a_time_shift_and_lossy_reencoding(fmt):
    """An excerpt from 2.3 s, re-encoded lossily, matches its original at 0.95 or more at a 2.3 s offset (+-1
    frame); another melody does not come near."""
    sr, frames = 24_000, MatchFrames()
    original = _melody(0, 8.0)
    excerpt = audio.decode(audio.encode(original[:, int(2.3 * sr): int(7.3 * sr)], sr, fmt))
    q = frames.embed(audio.resample(audio.downmix(excerpt.samples), excerpt.sample_rate, frames.sample_rate)[0])
    refs = [frames.embed(audio.resample(x, sr, frames.sample_rate)[0]) for x in (original, _melody(1, 8.0))]
    scores, lags = match_scores([q], refs)
    assert scores[0, 0] >= 0.95 and abs(lags[0, 0] - 23) <= 1
    assert scores[0, 1] < 0.6


def test_conformal_threshold_rank_and_bound():
    scores = np.random.default_rng(2).permutation(np.arange(99.0))
    t = conformal_threshold(scores, 0.05)  # k = ceil(100 * 0.95) = 95
    assert (t.rank, t.value, t.n) == (95, 94.0, 99) and t.bound == pytest.approx(0.05)
    small = conformal_threshold(np.arange(10.0), 0.01)  # k = 11 > n: the maximum, bound 1 / 11
    assert (small.rank, small.value) == (10, 9.0) and small.bound == pytest.approx(1 / 11)
    exact = conformal_threshold(np.arange(19.0), 0.05)  # (n + 1)(1 - alpha) = 19 exactly: k = 19
    assert exact.rank == 19 and exact.bound == pytest.approx(0.05)


def test_conformal_false_positive_rate_holds_for_exchangeable_scores():
    """The guarantee, simulated: over 4,000 draws of 40 i.i.d. scores, the 40th exceeds the threshold calibrated on
    the other 39 (alpha 0.1: rank 36, exact rate 4 / 40) as often as the binomial test accepts."""
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(4000):
        draw = rng.random(40)
        hits += draw[-1] > conformal_threshold(draw[:-1], 0.1).value
    assert scipy.stats.binomtest(hits, 4000, 0.1).pvalue > 1e-3


# ---------------------------------------------------------------------------------------------------------------------
# The CLI on a synthetic corpus

CLIP_S = 3.0
SHIFT_S = 1.3


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """14 n2m synth tracks of 8-9 s; the first 11 built into 3 s clips (train and valid alternately, pinned by the
    manifest's split column; one track marked held out in train), the last 3 never built (unseen real tracks).
    Generated: 3 copies of training clips' audio, shifted by 1.3 s and re-encoded to MP3/Ogg/FLAC, and 3 excerpts of
    the unseen tracks; one sidecar names an audio prompt."""
    root = tmp_path_factory.mktemp("memorization")
    corpus = root / "corpus"
    assert main(["synth", "--out", str(corpus), "--tracks", "14", "--seed", "3", "--min-seconds", "8",
                 "--max-seconds", "9", "--formats", "flac,wav", "--holdout", "0.25", "--workers", "0"]) == 0
    lines = (corpus / "manifest.jsonl").read_text().splitlines()
    rows = [{**json.loads(line), "split": ("train", "valid")[i % 2]} for i, line in enumerate(lines[:11])]
    marked = [row for row in rows if row["holdout"]]
    assert marked
    marked[0]["split"] = "train"  # a training-split clip of a track marked held out (for --exclude-holdout)
    (corpus / "built.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    build = root / "build"
    assert main(["build", "--input", str(corpus / "built.jsonl"), "--output", str(build), "--clip-seconds",
                 str(CLIP_S), "--sample-rate", "16000", "--split", "train=0.5,valid=0.5,test=0", "--no-progress"]) == 0
    index = pq.read_table(build / "index.parquet").to_pylist()
    train_uris = sorted({r["source_uri"] for r in index if r["split"] == "train"})
    assert len(train_uris) >= 3 and any(r["split"] == "valid" for r in index)
    gen = root / "generated"
    gen.mkdir()
    copies = {}
    for i, (uri, fmt) in enumerate(zip(train_uris, ("MP3", "OGG", "FLAC"))):
        decoded = audio.decode(Path(uri.removeprefix("file://")).read_bytes())
        start = int(SHIFT_S * decoded.sample_rate)
        excerpt = decoded.samples[:, start: start + int(CLIP_S * decoded.sample_rate)]
        (gen / f"copy{i}.{fmt.lower()}").write_bytes(audio.encode(excerpt, decoded.sample_rate, fmt))
        copies[f"copy{i}"] = uri
    unseen = [json.loads(line)["path"] for line in lines[11:]]
    for i, rel in enumerate(unseen):
        decoded = audio.decode((corpus / rel).read_bytes())
        start = int(2.0 * decoded.sample_rate)
        audio.write(gen / f"unseen{i}.wav", decoded.samples[:, start: start + int(CLIP_S * decoded.sample_rate)],
                    decoded.sample_rate)
    (gen / "copy0.json").write_text(json.dumps({"id": "copy0", "audio_prompt": f"../prompts/{Path(train_uris[0]).stem}"
                                                                                 ".wav"}))
    prompts = root / "prompts"
    prompts.mkdir()
    decoded = audio.decode(Path(train_uris[0].removeprefix("file://")).read_bytes())
    audio.write(prompts / f"{Path(train_uris[0]).stem}.wav", decoded.samples, decoded.sample_rate)
    held = {str((corpus / json.loads(line)["path"]).resolve()) for line in lines[:11] if json.loads(line)["holdout"]}
    return {"root": root, "build": build, "generated": gen, "copies": copies, "index": index, "marked": held}


@pytest.fixture(scope="module")
def run(corpus, clap_dir) -> dict:
    out = corpus["root"] / "report"
    argv = ["eval", "memorization", "--generated", str(corpus["generated"]), "--build", str(corpus["build"]),
            "--embedding", f"clap:{clap_dir}", "--cache-dir", str(corpus["root"] / "cache"), "--out", str(out)]
    code = main(list(argv))
    return {"code": code, "out": out, "argv": argv, "report": json.loads((out / "report.json").read_text())}


def test_copies_are_flagged_and_unseen_tracks_are_not(run, corpus):
    assert run["code"] == 0
    items = {it["id"]: it for it in run["report"]["memorization"]["items"]}
    assert set(items) == {"copy0", "copy1", "copy2", "unseen0", "unseen1", "unseen2"}
    for name, uri in corpus["copies"].items():
        match = items[name]["views"]["match"]
        assert items[name]["flagged"] and match["score"] >= 0.95
        nearest = match["nearest"][0]
        assert nearest["source_uri"] == uri  # the training clip the audio came from
        # the excerpt starts 1.3 s into the track: where it lines up in the clip + where the clip sits in the track
        assert abs(nearest["offset_s"] + nearest["shift_s"] - SHIFT_S) <= 0.1
    for name in ("unseen0", "unseen1", "unseen2"):
        assert not items[name]["flagged"]
        assert items[name]["views"]["match"]["score"] < run["report"]["memorization"]["thresholds"]["match"]["value"]
    share = run["report"]["metrics"]["memorized: share of generated clips"]
    assert (share["value"], share["n"]) == (0.5, 6)


def test_thresholds_are_calibrated_on_the_held_out_clips_only(run, corpus):
    """The valid split is held out: its clips calibrate both views (their count, the conformal rank and bound), and
    the threshold is a held-out score, not a generated one."""
    section = run["report"]["memorization"]
    held = [r for r in corpus["index"] if r["split"] != "train"]
    assert run["report"]["build"]["heldout_clips"] == len(held)
    assert run["report"]["build"]["training_clips"] == len(corpus["index"]) - len(held)
    for view in ("match", "embedding"):
        t = section["thresholds"][view]
        n = len(held)
        k = min(n, math.ceil((n + 1) * 0.99))
        assert (t["source"], t["heldout_clips"], t["rank"]) == ("calibrated", n, k)
        assert t["value"] == sorted(section["heldout_scores"][view])[k - 1]
        assert t["false_positive_bound"] == pytest.approx((n + 1 - k) / (n + 1))
    warned = any("held-out clips calibrate" in w for w in run["report"]["warnings"])
    assert warned == (section["thresholds"]["match"]["false_positive_bound"] > 0.05)


def test_exclude_holdout_moves_marked_training_clips_to_the_calibration(run, corpus, clap_dir, tmp_path):
    """As n2m train --exclude-holdout: train-split clips of tracks marked held out are not training clips."""
    marked = [r for r in corpus["index"] if r["split"] == "train" and r["source_uri"] in corpus["marked"]]
    assert marked  # the corpus has some
    out = tmp_path / "excluded"
    assert main([*run["argv"][:-1], str(out), "--exclude-holdout", "--samples", "0"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["build"]["training_clips"] == run["report"]["build"]["training_clips"] - len(marked)
    assert rep["build"]["heldout_clips"] == run["report"]["build"]["heldout_clips"] + len(marked)
    assert rep["memorization"]["thresholds"]["match"]["heldout_clips"] == rep["build"]["heldout_clips"]
    assert "<audio" not in (out / "report.html").read_text()


def test_prompt_named_by_a_sidecar_is_measured(run):
    """copy0's sidecar names its whole source track as audio prompt: it copies the prompt, and matches it at least as
    well as its best training clip."""
    section = run["report"]["memorization"]["prompts"]
    prompted = {it["id"]: it["prompt"] for it in run["report"]["memorization"]["items"] if "prompt" in it}
    assert set(prompted) == {"copy0"} and section["clips"] == 1
    assert prompted["copy0"]["copies_prompt"] and prompted["copy0"]["match"] >= 0.95
    assert section["shares"]["copies_prompt"]["value"] == 1.0


def test_page_plays_each_match_beside_its_clip(run):
    """Self-contained page: every listened clip has its generated, nearest-training and prompt players as data URIs."""
    page = (run["out"] / "report.html").read_text()
    for needle in ("<script", "<link", 'src="http', 'href="http', "url(http", "@import"):
        assert needle not in page
    assert page.count("<svg") == 2  # held-out vs generated scores, per view
    assert page.count('src="data:audio/ogg;base64,') >= 3 * 2 + 1
    assert "FLAGGED: copies a training clip" in page and "Thresholds" in page
    assert "data:audio" not in (run["out"] / "report.json").read_text()


def test_rerun_reads_every_clip_from_the_cache(run, corpus, capsys):
    out = corpus["root"] / "rerun"
    argv = [*run["argv"][:-1], str(out)]
    assert main(argv) == 0
    rep = json.loads((out / "report.json").read_text())
    clips = len(corpus["index"])
    assert rep["sets"]["build clips"]["cache_hits"] == 2 * clips  # match frames + embedding, per clip
    assert rep["memorization"]["thresholds"] == run["report"]["memorization"]["thresholds"]
    assert "flagged: copy0 ->" in capsys.readouterr().out


def test_user_mistakes_are_one_line_errors(run, corpus, clap_dir, tmp_path, capsys):
    base = ["eval", "memorization", "--generated", str(corpus["generated"]), "--embedding", f"clap:{clap_dir}",
            "--cache-dir", str(corpus["root"] / "cache")]
    cases = [
        ([*base, "--build", str(tmp_path), "--out", str(tmp_path / "a")], "is not an n2m build"),
        ([*base, "--build", str(corpus["build"]), "--train-splits", "train,valid", "--out", str(tmp_path / "b")],
         "no held-out clips to calibrate"),
        ([*base, "--build", str(corpus["build"]), "--train-splits", "nope", "--out", str(tmp_path / "c")],
         "no training clips"),
        (["eval", "memorization", "--generated", str(tmp_path), "--build", str(corpus["build"])], "no generated audio"),
        ([*base, "--build", str(corpus["build"]), "--prompts-audio", str(tmp_path / "none")], "no such audio"),
    ]
    damaged = tmp_path / "damaged"
    shutil.copytree(corpus["build"], damaged)
    tar = sorted((damaged / "shards" / "train").glob("*.tar"))[0]
    tar.write_bytes(tar.read_bytes()[:-1024])
    cases.append(([*base, "--build", str(damaged), "--out", str(tmp_path / "d")], "truncated"))
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err.splitlines()[-1] and "Traceback" not in err
    with pytest.raises(SystemExit) as exit_info:
        main([*base, "--build", str(corpus["build"]), "--alpha", "1.5"])
    assert exit_info.value.code == 2 and "--alpha" in capsys.readouterr().err
    fixed = [*base, "--build", str(corpus["build"]), "--train-splits", "train,valid", "--match-threshold", "0.9",
             "--embedding-threshold", "0.99", "--out", str(tmp_path / "e")]
    assert main(fixed) == 0  # fixed thresholds need no held-out clips
    rep = json.loads((tmp_path / "e" / "report.json").read_text())
    assert rep["memorization"]["thresholds"]["match"]["source"] == "fixed"
