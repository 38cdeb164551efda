"""The joint model on pretrained towers (n2m.joint, n2m clap-train --text-init/--audio-init): trained through the real
CLI, saved, reloaded, and seen identically by every consumer of a CLAP directory (label job, --text-encoder clap:DIR,
n2m eval clap-score and fad --embedding clap:DIR). Towers are tiny random stand-ins made by the real factories (a
BERT with a trained tokenizer, a musicnn with a small back end), so nothing needs ``n2m models fetch``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import CAPTIONS, write_build, write_vocab

from n2m import cli
from n2m.clap import ClapEmbedder, text_width_of
from n2m.errors import UserError
from n2m.joint import TowerEmbedder
from n2m.labeling.clap_towers import pick_views, sigmoid_tag_loss, tag_bank, text_views
from n2m.provenance import dir_hash

TONE, NOISE = "a soft low sine tone", "harsh loud white noise"
MUSICNN = {"num_classes": 4, "num_filt_midend": 8, "num_units_backend": 16}
LAYERS = ("timbral", "temporal", "max_pool")  # the default of --audio-init
SHORT = ["tone", "noise", "piano", "drums", "soft", "harsh"]
SR = 16_000


def _sine(seconds: float, freq: float, sr: int = SR) -> np.ndarray:
    t = np.arange(int(seconds * sr)) / sr
    return (0.3 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.fixture(scope="module")
def towers(tmp_path_factory) -> dict[str, Path]:
    """A random 2-block BERT with a BPE tokenizer (n2m.labeling.presets) and a random musicnn folder (n2m.musicnn)."""
    from safetensors.torch import save_file
    from transformers import BertConfig, BertModel

    from n2m.labeling.presets import train_tokenizer
    from n2m.musicnn import model_config
    from n2m.musicnn_net import MusicnnNet

    root = tmp_path_factory.mktemp("towers")
    tokenizer = train_tokenizer([TONE, NOISE, *CAPTIONS, *SHORT] * 3, vocab_size=300, max_length=32)
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=32,
                         pad_token_id=tokenizer.pad_token_id)).save_pretrained(str(root / "text"))
    tokenizer.save_pretrained(str(root / "text"))
    net = MusicnnNet(**MUSICNN)
    (root / "audio").mkdir()
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(root / "audio" / "model.safetensors"))
    (root / "audio" / "config.json").write_text(json.dumps(model_config("tiny", "musicnn", list("abcd"), MUSICNN)))
    return {"text": root / "text", "audio": root / "audio"}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    """Six 10 s tracks: low tones ("tone" captions) and a harsh 7919 Hz tone ("noise"); two of them held out."""
    root = tmp_path_factory.mktemp("corpus")
    rows, clips = [], []
    for i in range(6):
        tone = i % 2 == 0
        path = f"audio/t{i}.wav"
        rows.append({"path": path, "caption": TONE if tone else NOISE, "tags": ["tone", "soft"] if tone else
                     ["noise", "harsh"], "holdout": i >= 4})
        clips.append({"uri": str(root / "corpus" / path), "seconds": 10, "freq": 110 + 10 * i if tone else 7919})
    write_build(root / "out", {"train": [clips[:3], clips[3:]]}, sample_rate=SR)
    (root / "corpus").mkdir()
    manifest = root / "corpus" / "manifest.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return {"root": root, "build": str(root / "out"), "manifest": str(manifest)}


def _clap_train(corpus: dict, out: Path, towers: dict, *extra: str) -> int:
    return cli.main(["clap-train", "--build", corpus["build"], "--captions", corpus["manifest"], "--out", str(out),
                     "--text-init", f"hf:{towers['text']}", "--audio-init", f"musicnn:{towers['audio']}",
                     "--batch-size", "4", "--warmup", "5", "--lr", "3e-3", *extra])


@pytest.fixture(scope="module")
def joint_dir(corpus, towers) -> Path:
    out = corpus["root"] / "joint"
    assert _clap_train(corpus, out, towers, "--max-steps", "100") == 0
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Training through the CLI, and what the directory records


def test_clap_train_with_pretrained_towers_records_towers_and_lineage(joint_dir, corpus, towers):
    config = json.loads((joint_dir / "config.json").read_text())
    assert config["model_type"] == "n2m_towers"
    assert config["audio"]["sha1"] == dir_hash(towers["audio"]) == dir_hash(joint_dir / "audio")  # copied as is
    assert config["text"]["sha1"] == dir_hash(towers["text"]) == dir_hash(joint_dir / "text")  # locked: unchanged
    assert config["audio"]["layers"] == list(LAYERS) and config["audio"]["name"] == f"musicnn:{towers['audio']}"
    assert config["audio"]["width"] == 2 * 204 + 3 * 51 + (561 + 3 * 8)  # timbral, temporal, max_pool (musicnn_net)
    assert config["embed_dim"] == config["text"]["width"] == 32  # locked text tower, no text head
    lineage = config["lineage"]
    assert lineage["build"] == str(Path(corpus["build"]).resolve()) and lineage["steps"] == 100
    assert lineage["captions_sha1"] and lineage["tracks"] == 4  # the two held-out tracks were not trained on
    record = json.loads((joint_dir / "train.json").read_text())
    assert record["holdout_tracks"] == 2 and record["metrics"]["holdout"]["tracks"] == 2
    curve = record["curve"]
    assert np.mean([c["loss"] for c in curve[-3:]]) < curve[0]["loss"]
    embedder = ClapEmbedder.from_pretrained(str(joint_dir))
    text = embedder.embed_text([TONE, NOISE])
    scores = embedder.embed_audio([_sine(10, 190), _sine(10, 7919)], SR) @ text.T  # [clip, caption]
    assert scores[0, 0] > scores[0, 1] and scores[1, 1] > scores[1, 0]


def test_reloaded_model_matches_an_independent_computation(joint_dir, towers):
    """Audio and text embeddings recomputed from the folder's raw files (musicnn weights, heads.safetensors, the text
    tower through transformers), with the window rule written out by hand."""
    from safetensors.torch import load_file
    from transformers import AutoModel, AutoTokenizer

    from n2m.musicnn import patches
    from n2m.musicnn_net import MusicnnNet

    embedder = ClapEmbedder.from_pretrained(str(joint_dir))
    assert isinstance(embedder, TowerEmbedder) and embedder.model_id == dir_hash(joint_dir)
    assert (embedder.sample_rate, embedder.window_s, embedder.min_tail_s, embedder.fusion) == (SR, 10.0, 5.0, False)
    clip = _sine(25, 330) + _sine(25, 95)  # 25 s: windows [0, 10), [10, 20) and a 5 s tail, tiled twice
    windows = [clip[:160_000], clip[160_000:320_000], np.tile(clip[320_000:], 2)]
    net = MusicnnNet(**MUSICNN)
    net.load_state_dict(load_file(str(towers["audio"] / "model.safetensors")))
    heads = load_file(str(joint_dir / "heads.safetensors"))
    raw = []
    with torch.no_grad():
        for window in windows:
            out = net.eval()(torch.from_numpy(patches(window)))  # 3 patches
            x = torch.cat([out["timbral"].mean(1), out["temporal"].mean(1), out["max_pool"]], dim=1).mean(0)
            x = (x - heads["audio_head.mean"]) / heads["audio_head.std"]
            x = F.gelu(F.linear(x, heads["audio_head.net.0.weight"], heads["audio_head.net.0.bias"]))
            raw.append(F.linear(x, heads["audio_head.net.2.weight"], heads["audio_head.net.2.bias"]).numpy())
    expected = np.mean(raw, axis=0)
    np.testing.assert_allclose(embedder.embed_audio([clip], SR)[0], expected / np.linalg.norm(expected), atol=1e-5)
    np.testing.assert_allclose(embedder.embed_windows(windows), np.stack(raw), rtol=1e-4, atol=1e-5)
    texts = [TONE, "noise", CAPTIONS[0]]
    tokenizer, tower = AutoTokenizer.from_pretrained(str(towers["text"])), AutoModel.from_pretrained(str(towers["text"]))
    tokens = tokenizer(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        states = tower.eval()(**tokens).last_hidden_state
    mask = tokens["attention_mask"][..., None].float()
    pooled = ((states * mask).sum(1) / mask.sum(1)).numpy()
    np.testing.assert_allclose(embedder.embed_text(texts), pooled / np.linalg.norm(pooled, axis=1, keepdims=True),
                               atol=1e-5)
    again = ClapEmbedder.from_pretrained(str(joint_dir))
    np.testing.assert_array_equal(again.embed_audio([clip], SR), embedder.embed_audio([clip], SR))


# ---------------------------------------------------------------------------------------------------------------------
# Every consumer


def test_label_job_scores_with_the_joint_model(joint_dir, corpus, tmp_path):
    from n2m.audio import decode
    from n2m.labeling.embed import read_samples

    short = write_vocab(tmp_path / "short.parquet", SHORT, "short")
    long = write_vocab(tmp_path / "long.parquet", CAPTIONS, "long")
    assert cli.main(["label", "--build", corpus["build"], "--vocab", long, "--vocab", short, "--model",
                     str(joint_dir), "--k", "3", "--k-prime", "1,2", "--name", "joint", "--",
                     "--direct_running_mode=in_memory"]) == 0
    label_dir = Path(corpus["build"]) / "labels" / "joint"
    embedder = ClapEmbedder.from_pretrained(str(joint_dir))
    manifest = json.loads((label_dir / "manifest.json").read_text())
    assert manifest["model"]["sha1"] == embedder.model_id
    import pyarrow.parquet as pq

    rows = [r for p in sorted(label_dir.glob("*.parquet")) for r in pq.read_table(p).to_pylist()]
    audio = {}
    for shard in sorted((Path(corpus["build"]) / "shards").glob("*/*.tar")):
        for key, members in read_samples(str(shard)):
            decoded = decode(members["flac"])
            audio[key] = embedder.embed_audio([decoded.samples], decoded.sample_rate)[0]
    short_text = embedder.embed_text(SHORT)
    assert {r["key"] for r in rows} == set(audio) and len(rows) == 2 * len(audio)
    for row in (r for r in rows if r["vocab"] == "short"):
        scores = short_text @ audio[row["key"]]
        np.testing.assert_allclose(row["topk_scores"], np.sort(scores)[::-1][:3], atol=1e-5)


def test_text_encoder_clap_dir_gives_the_text_towers_states(joint_dir, towers):
    from transformers import AutoModel, AutoTokenizer

    from n2m.training.text import load_text_encoder

    encoder = load_text_encoder(f"clap:{joint_dir}", 12)
    texts = [NOISE, "a calm piano piece with a long long long tail of words that goes past twelve tokens", ""]
    states, mask = encoder.encode(texts)
    assert encoder.dim == 32 and states.shape == (3, 12, 32) and not mask[2].any()
    tokenizer, tower = AutoTokenizer.from_pretrained(str(towers["text"])), AutoModel.from_pretrained(str(towers["text"]))
    tokens = tokenizer(texts[:2], padding="max_length", truncation=True, max_length=12, return_tensors="pt")
    with torch.no_grad():
        direct = tower.eval()(**tokens).last_hidden_state * tokens["attention_mask"][..., None]
    np.testing.assert_allclose(states[:2].numpy(), direct.numpy(), atol=1e-5)
    assert mask[:2].tolist() == tokens["attention_mask"].bool().tolist()
    assert text_width_of(str(joint_dir)) == 32


def test_text_width_of_a_joint_model_through_training(joint_dir):
    from n2m.training.text import text_width

    assert text_width(f"clap:{joint_dir}") == 32


def test_eval_clap_score_and_fad_with_the_joint_model(joint_dir, tmp_path):
    from n2m import audio
    from n2m.eval import frechet

    prompts = {"low": TONE, "high": NOISE, "mid": "a calm piano piece"}
    freqs = {"low": 150.0, "high": 7919.0, "mid": 660.0}
    for folder, shift in (("gen", 0.0), ("ref", 40.0)):
        (tmp_path / folder).mkdir()
        for pid, freq in freqs.items():
            audio.write(tmp_path / folder / f"{pid}.wav", _sine(3, freq + shift)[None], SR)
    (tmp_path / "prompts.jsonl").write_text("".join(json.dumps({"id": k, "text": v}) + "\n" for k, v in prompts.items()))
    common = ["--no-cache", "--samples", "0"]
    assert cli.main(["eval", "clap-score", "--audio", str(tmp_path / "gen"), "--prompts", str(tmp_path / "prompts.jsonl"),
                     "--model", str(joint_dir), "--bootstrap", "0", "--out", str(tmp_path / "score"), *common]) == 0
    assert cli.main(["eval", "fad", "--reference", str(tmp_path / "ref"), "--generated", str(tmp_path / "gen"),
                     "--embedding", f"clap:{joint_dir}", "--bootstrap", "0", "--out", str(tmp_path / "fad"),
                     *common]) == 0
    embedder = ClapEmbedder.from_pretrained(str(joint_dir))
    ids = sorted(prompts)
    clips = {side: [audio.decode(str(tmp_path / side / f"{i}.wav")).samples for i in ids] for side in ("gen", "ref")}
    expected = np.sum(embedder.embed_audio(clips["gen"], SR) * embedder.embed_text([prompts[i] for i in ids]), axis=1)
    score = json.loads((tmp_path / "score" / "report.json").read_text())
    assert score["models"]["clap"]["id"] == f"clap:{embedder.model_id}"
    per_item = score["clap_score"]["text"]["per_item"]
    np.testing.assert_allclose([per_item[i] for i in ids], expected, atol=1e-5)
    fad = json.loads((tmp_path / "fad" / "report.json").read_text())
    frames = {side: embedder.embed_audio(clips[side], SR) for side in ("gen", "ref")}  # one window per 3 s clip
    direct = frechet.frechet_distance(frechet.stats_of(frames["ref"]), frechet.stats_of(frames["gen"]), check=False)
    assert fad["metrics"]["FAD_CLAP"]["value"] == pytest.approx(direct.value, rel=1e-4, abs=1e-6)


# ---------------------------------------------------------------------------------------------------------------------
# Partial fine-tuning, mistakes, helpers


def test_tuning_the_text_towers_top_block_changes_only_that_block(corpus, towers, tmp_path):
    from safetensors.torch import load_file

    out = tmp_path / "tuned"
    assert _clap_train(corpus, out, towers, "--max-steps", "5", "--tune-text-layers", "1", "--tune-lr", "1e-2",
                       "--text-head-layers", "1", "--embed-dim", "8") == 0
    config = json.loads((out / "config.json").read_text())
    assert config["text"]["tuned_layers"] == 1 and config["embed_dim"] == 8
    assert config["text"]["sha1"] == dir_hash(towers["text"]) != dir_hash(out / "text")
    before, after = load_file(str(towers["text"] / "model.safetensors")), load_file(str(out / "text" / "model.safetensors"))
    changed = {k.removeprefix("bert.") for k in after if not torch.equal(after[k], before.get(k, before.get("bert." + k)))}
    assert changed and all(k.startswith("encoder.layer.1.") for k in changed)
    embedder = ClapEmbedder.from_pretrained(str(out))
    assert embedder.embed_text([TONE]).shape == (1, 8) and embedder.embed_dim == 8


@pytest.mark.parametrize(("flags", "message"), [
    (["--text-init", "hf:x"], "--text-init needs its partner"),
    (["--text-init", "bert:x", "--audio-init", "musicnn:x"], "--text-init must be hf:DIR"),
    (["--text-init", "hf:TEXT", "--audio-init", "vggish:x"], "--audio-init must be musicnn:MODEL"),
    (["--text-init", "hf:TEXT", "--audio-init", "musicnn:AUDIO:nope"], "has no layer nope"),
    (["--text-init", "hf:TEXT", "--audio-init", "musicnn:AUDIO", "--init", "x"], "does not combine"),
    (["--text-init", "hf:TEXT", "--audio-init", "musicnn:AUDIO", "--tune-text-layers", "3"], "has 2 blocks"),
])
def test_tower_flag_mistakes_are_one_line_errors(corpus, towers, tmp_path, capsys, flags, message):
    flags = [f.replace("TEXT", str(towers["text"])).replace("AUDIO", str(towers["audio"])) for f in flags]
    code = cli.main(["clap-train", "--build", corpus["build"], "--captions", corpus["manifest"],
                     "--out", str(tmp_path / "x"), *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


def _drop_and_narrow(file: Path, drop: str, narrow: str) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(file))
    tensors.pop(drop)
    tensors[narrow] = tensors[narrow][..., :10].contiguous()
    save_file(tensors, str(file))


@pytest.mark.parametrize(("file", "drop", "narrow"), [
    ("heads.safetensors", "audio_head.net.2.bias", "audio_head.net.0.weight"),
    ("text/model.safetensors", "pooler.dense.bias", "encoder.layer.0.output.dense.weight"),
])
def test_weights_that_do_not_fit_the_config_are_refused(joint_dir, tmp_path, file, drop, narrow):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(joint_dir, broken)
    _drop_and_narrow(broken / file, drop, narrow)
    with pytest.raises(UserError, match="do(es)? not fit") as err:
        ClapEmbedder.from_pretrained(str(broken))
    assert drop in str(err.value) and narrow in str(err.value) and "\n" not in str(err.value)


def test_text_views_and_their_sampling():
    rng = np.random.default_rng(0)
    row = {"caption": "full caption", "tags": ["rock", "fast", "piano"]}
    views = text_views(rng, row, 40)
    assert views[0] == "full caption" and len(views) == len(set(views)) > 3
    assert all(set(v.split(", ")) <= {"rock", "fast", "piano"} for v in views[1:])
    first = np.array([0, 1, 5])  # track 0: its caption only; track 1: caption + 3 tag views
    rows = pick_views(rng, np.array([0, 1] * 2000), first, 0.8)
    assert set(rows[::2]) == {0} and set(rows[1::2]) <= {1, 2, 3, 4}
    share = np.mean(rows[1::2] == 1)  # the caption: 1 - tag_prob
    assert 0.17 < share < 0.23 and min(np.bincount(rows[1::2])[2:]) > 450  # tag views uniform (~533 each)


def test_tag_bank_and_sigmoid_tag_loss_closed_form():
    names, membership = tag_bank([{"tags": ["rock", "fast"]}, {"tags": ["jazz", "rock"]}, {"caption": "no tags"}])
    assert names == ["fast", "jazz", "rock"]
    assert membership.tolist() == [[1, 0, 1], [0, 1, 1], [0, 0, 0]]
    audio = torch.tensor([[2.0, 0.0]])  # normalised to [1, 0]
    tags = torch.tensor([[3.0, 0.0], [0.0, 1.0]])  # [1, 0] and [0, 1]: cosines 1 and 0
    loss = sigmoid_tag_loss(audio, tags, torch.tensor([[1.0, 0.0]]), torch.tensor(np.log(2.0)), torch.tensor(-1.0))
    # logits exp(log 2) * [1, 0] - 1 = [1, -1]; -log sigmoid(1) - log(1 - sigmoid(-1)) = 2 log(1 + e^-1)
    assert loss.item() == pytest.approx(2 * np.log1p(np.exp(-1.0)), rel=1e-6)
