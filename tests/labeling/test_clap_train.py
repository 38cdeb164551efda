"""n2m clap-train: joins captions to clips, keeps holdout tracks out, learns, saves a loadable CLAP."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import write_build

from n2m.clap import ClapEmbedder
from n2m.cli import build_parser, main
from n2m.errors import UserError
from n2m.labeling.clap_train import clap_loss, learning_rate, track_text
from n2m.labeling.presets import build_clap

TONE, NOISE = "a soft low sine tone", "harsh loud white noise"


def _train(*argv: str) -> int:
    parser = build_parser({"clap-train": ("x", "n2m.labeling.clap_train_cli")})
    args = parser.parse_args(["clap-train", *argv])
    return args.func(args)


@pytest.fixture()
def corpus(tmp_path):
    """Ten tracks: low tones and a harsh 7919 Hz tone ("noise" captions), two of them held out."""
    rows, clips = [], []
    for i in range(10):
        tone = i % 2 == 0
        path = f"audio/t{i}.wav"
        rows.append({"path": path, "caption": TONE if tone else NOISE, "tags": ["tone" if tone else "noise"],
                     "holdout": i >= 8})
        clips.append({"uri": str(tmp_path / "corpus" / path), "seconds": 10, "freq": 110 + 10 * i if tone else 7919})
    write_build(tmp_path / "out", {"train": [clips[:5], clips[5:]]})
    (tmp_path / "corpus").mkdir()
    manifest = tmp_path / "corpus" / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path, manifest


def test_trains_and_saves_a_loadable_clap(corpus):
    root, manifest = corpus
    out = root / "clap"
    assert _train("--build", str(root / "out"), "--captions", str(manifest), "--out", str(out), "--preset", "micro",
                  "--max-steps", "80", "--batch-size", "4", "--lr", "3e-3", "--warmup", "5", "--tag-prob", "0") == 0
    record = json.loads((out / "train.json").read_text())
    assert record["tracks"] == 8 and record["holdout_tracks"] == 2  # held-out tracks never trained on
    assert record["steps"] == 80 and record["lineage"]["captions_sha1"]
    curve = record["curve"]
    assert np.mean([c["loss"] for c in curve[-3:]]) < curve[0]["loss"]
    embedder = ClapEmbedder.from_pretrained(str(out))
    text = embedder.embed_text([TONE, NOISE])
    sr = 24_000
    t = np.arange(10 * sr) / sr
    tone = (0.3 * np.sin(2 * np.pi * 190 * t)).astype(np.float32)
    noise = (0.3 * np.sin(2 * np.pi * 7919 * t)).astype(np.float32)
    scores = embedder.embed_audio([tone, noise], sr) @ text.T  # [clip, caption]
    assert scores[0, 0] > scores[0, 1] and scores[1, 1] > scores[1, 0]


def test_unmatched_manifest_is_a_user_error(corpus, tmp_path):
    root, _ = corpus
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"path": "/elsewhere/x.wav", "caption": "x"}) + "\n")
    with pytest.raises(UserError, match="matches"):
        _train("--build", str(root / "out"), "--captions", str(other), "--out", str(tmp_path / "c"))


def test_loss_is_symmetric_infonce_closed_form():
    model, _, _ = build_clap("micro", ["a b c"] * 3)
    with torch.no_grad():
        model.logit_scale_a.fill_(0.0)
        model.logit_scale_t.fill_(0.0)
    audio = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    loss, acc = clap_loss(model, audio, text)
    expected = -np.log(np.e / (np.e + 1.0))  # logits [[1, 0], [0, 1]] in both directions
    assert abs(loss.item() - expected) < 1e-6 and acc == 1.0


def test_schedule_and_tag_augmentation():
    assert learning_rate(0, 1.0, 10, 0.0) == pytest.approx(0.1)
    assert learning_rate(10, 1.0, 10, 0.0) == pytest.approx(1.0)
    assert learning_rate(50, 1.0, 10, 0.5) == pytest.approx(0.55)
    assert learning_rate(100, 1.0, 10, 1.0) == pytest.approx(0.1)
    rng = np.random.default_rng(0)
    row = {"caption": "full caption", "tags": ["rock", "fast", "piano"]}
    texts = [track_text(rng, row, 0.5) for _ in range(400)]
    share = np.mean([t == "full caption" for t in texts])
    assert 0.4 < share < 0.6
    assert all(set(t.split(", ")) <= {"rock", "fast", "piano"} for t in texts if t != "full caption")
    assert track_text(rng, {"caption": "c", "tags": []}, 1.0) == "c"


def test_init_fine_tunes_an_existing_clap_directory(corpus, micro_clap_dir):
    root, manifest = corpus
    out = root / "tuned"
    assert _train("--build", str(root / "out"), "--captions", str(manifest), "--out", str(out), "--init",
                  micro_clap_dir, "--max-steps", "3", "--batch-size", "4", "--warmup", "1") == 0
    base, tuned = ClapEmbedder.from_pretrained(micro_clap_dir), ClapEmbedder.from_pretrained(str(out))
    assert tuned.tokenizer.get_vocab() == base.tokenizer.get_vocab()  # the original tokenizer is kept
    assert tuned.model.config.to_dict()["audio_config"] == base.model.config.to_dict()["audio_config"]
    changed = [k for k, v in tuned.model.state_dict().items() if not torch.equal(v, base.model.state_dict()[k])]
    assert changed  # weights moved
    assert json.loads((out / "train.json").read_text())["lineage"]["init_sha1"] == base.model_id


def test_a_negative_seed_is_a_one_line_error(corpus, capsys):
    root, manifest = corpus
    argv = ["clap-train", "--build", str(root / "out"), "--captions", str(manifest), "--out", str(root / "clap"),
            "--preset", "micro", "--max-steps", "1", "--batch-size", "4", "--seed", "-1"]
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--seed" in err[0] and "'-1'" in err[0]
    assert not (root / "clap").exists()  # refused before any work
