"""``n2m train --condition text|audio-embedding|text+audio-embedding|text+text-embedding`` and ``--melody`` through the real training path
(the CLI, the data module, Lightning), on a tiny build and a tiny random joint model (issue 16, items 1 and 3)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import scipy.stats
import torch
from builders import write_build
from lightning.pytorch.callbacks import Callback

from n2m.audio import decode
from n2m.clap import ClapEmbedder
from n2m.cli import build_parser
from n2m.clip_embed import save_store
from n2m.config import apply_config
from n2m.errors import UserError
from n2m.layout import BuildLayout, committed_shards
from n2m.melody import melody_features
from n2m.provenance import dir_hash
from n2m.training.data import read_shards
from n2m.training.train_cli import run_train


@pytest.fixture(scope="module")
def build(tmp_path_factory) -> dict:
    """2 train shards of 3 clips, 1 valid shard of 2 (2 s tones at 24 kHz), label set ``tiny``; its own folder, since
    the runs store joint embeddings in it."""
    root = tmp_path_factory.mktemp("cond_build")
    return {"root": str(root), **write_build(root, {"train": [3, 3], "valid": [2]})}


def _args(build: dict, out: Path, *extra: str, steps: int = 2, batch: int = 3, window: str = "0.5"):
    argv = ["train", "--stage", "generator", "--build", build["root"], "--preset", "tiny", "--out", str(out),
            "--window", window, "--batch-size", str(batch), "--num-workers", "0", "--max-steps", str(steps),
            "--val-every", "1000", "--val-samples", "0", "--warmup-steps", "1", "--accelerator", "cpu",
            "--devices", "1", *extra]
    parser = build_parser({"train": ("train", "n2m.training.train_cli")})
    return apply_config(parser, parser.parse_args(argv), argv)


class Batches(Callback):
    """Records every training batch and the conditioning the module makes of it (before dropout)."""

    def __init__(self):
        self.batches, self.conds = [], []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.batches.append(batch)
        self.conds.append(pl_module.conditioning(batch, augment=False))


def _train(build: dict, out: Path, *extra: str, callbacks: tuple[Callback, ...] = (), **kw) -> tuple[Batches, dict]:
    seen = Batches()
    assert run_train(_args(build, out, *extra, **kw), extra_callbacks=(seen, *callbacks)) == 0
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    return seen, ckpt


def _clips(build: dict) -> dict[str, tuple[np.ndarray, int]]:
    """Every clip of the build, decoded independently of the training code's example makers."""
    out = {}
    for sample in read_shards([s.tar for s in committed_shards(build["root"], ["train", "valid"])]):
        decoded = decode(sample["flac"])
        out[sample["__key__"]] = (decoded.samples, decoded.sample_rate)
    return out


def test_audio_embedding_conditions_on_each_clips_own_embedding_without_any_caption(build, joint_models, tiny_t5,
                                                                                      tmp_path):
    """No label set and no metadata text: every example still has a condition, its clip's joint audio embedding
    ``[B, D]``, equal to the joint model's embedding of the whole clip computed directly; the stage has no text
    encoder; the store is filled per shard content; the checkpoint records the joint model's content hash."""
    model_a = joint_models[0]
    with pytest.raises(UserError, match="needs captions"):  # the text stage cannot train on these clips
        run_train(_args(build, tmp_path / "text", "--no-meta-text", "--text-encoder", f"t5:{tiny_t5}"))
    seen, ckpt = _train(build, tmp_path / "run", "--condition", "audio-embedding", "--joint-model", model_a,
                        "--no-meta-text")
    embedder = ClapEmbedder.from_pretrained(model_a)
    clips = _clips(build)
    for batch, cond in zip(seen.batches, seen.conds):
        assert cond.text is None and cond.joint.shape == (3, embedder.embed_dim) and cond.joint_mask.all()
        assert batch["text"] == ["", "", ""]
        direct = np.stack([embedder.embed_audio([clips[k][0]], clips[k][1])[0] for k in batch["key"]])
        np.testing.assert_allclose(cond.joint.numpy(), direct, atol=1e-5)

    config = ckpt["n2m"]["config"]
    assert config["conditioning"]["condition"] == "audio-embedding"
    assert config["conditioning"]["joint_model_sha1"] == dir_hash(model_a)
    assert config["text_encoder"] is None and config["net"]["text_dim"] == 0
    assert config["net"]["joint_dim"] == embedder.embed_dim
    assert ckpt["state_dict"]["net.joint_proj.0.weight"].shape[1] == embedder.embed_dim
    store = Path(BuildLayout(build["root"]).embedding_dir(dir_hash(model_a)[:16]))
    shas = {json.loads(Path(s.marker).read_text())["tar"]["sha1"]
            for s in committed_shards(build["root"], ["train", "valid"])}
    assert {p.stem for p in store.glob("*.npz")} == shas  # one file per shard, named by its content

    bank = ckpt["n2m"]["joint_bank"]  # the text bridge's index: exactly the clips trained on, with their embeddings
    seen_keys = sorted({k for batch in seen.batches for k in batch["key"]})
    assert bank["keys"] == seen_keys
    direct = np.stack([embedder.embed_audio([clips[k][0]], clips[k][1])[0] for k in seen_keys])
    np.testing.assert_allclose(bank["vectors"].numpy(), direct, atol=1e-5)


def test_stored_embeddings_of_the_model_are_read_and_others_ignored(joint_models, tmp_path):
    """A store file of this model for a shard's content is used as it is (planted vectors reach the batches); a file
    that names another model is not (that shard is embedded again)."""
    model_a, model_b = joint_models
    build = {"root": str(tmp_path / "build")}
    write_build(tmp_path / "build", {"train": [3, 3]})
    sha_a = dir_hash(model_a)
    store = BuildLayout(build["root"]).embedding_dir(sha_a[:16])
    planted = {}
    for i, shard in enumerate(committed_shards(build["root"], ["train"])):
        shard_sha = json.loads(Path(shard.marker).read_text())["tar"]["sha1"]
        keys = [s["__key__"] for s in read_shards([shard.tar])]
        vectors = np.random.default_rng(i).normal(size=(len(keys), 16)).astype(np.float32)
        owner = sha_a if i == 0 else dir_hash(model_b)
        save_store(f"{store}/{shard_sha}.npz", keys, vectors, [],
                     {"model_id": owner, "sample_rate": 16000, "window_s": 10.0, "min_tail_s": 7.5,
                      "reduce": "mean_raw_then_l2", "shard_sha1": shard_sha})
        planted.update({k: (v, i == 0) for k, v in zip(keys, vectors)})
    seen, _ = _train(build, tmp_path / "run", "--condition", "audio-embedding", "--joint-model", model_a,
                     "--no-meta-text", steps=4)
    used = 0
    for batch, cond in zip(seen.batches, seen.conds):
        for key, vector in zip(batch["key"], cond.joint.numpy()):
            expected, kept = planted[key]
            assert np.allclose(vector, expected) == kept, key  # the label job's tail rule (7.5 s) may differ
            used += kept
    assert used > 0


def test_text_and_audio_embedding_record_both_rates_and_condition_on_both(build, joint_models, tiny_t5, tmp_path):
    seen, ckpt = _train(build, tmp_path / "run", "--condition", "text+audio-embedding", "--joint-model",
                        joint_models[0], "--labels", "tiny", "--text-encoder", f"t5:{tiny_t5}", "--text-dropout",
                        "0.3", "--audio-dropout", "0.6")
    cond = seen.conds[0]
    assert cond.text.shape[0] == 3 and cond.text.shape[2] == 32 and cond.text_mask.any(1).all()
    assert cond.joint.shape == (3, 16) and cond.joint_mask.all()
    config = ckpt["n2m"]["config"]
    assert (config["diffusion"]["cfg_dropout"], config["diffusion"]["audio_dropout"]) == (0.3, 0.6)
    assert config["conditioning"]["condition"] == "text+audio-embedding"
    assert (config["net"]["text_dim"], config["net"]["joint_dim"]) == (32, 16)


def test_text_embedding_conditions_on_the_joint_models_embedding_of_each_steps_caption(build, joint_models, tiny_t5,
                                                                                      tmp_path):
    """``text+text-embedding``: every training step's joint vector is the joint model's text embedding of that
    example's own caption (computed here by a freshly loaded embedder), beside the caption's tokens; an empty caption's
    vector is masked; the clips' audio is never embedded (no store in the build) and the checkpoint keeps no bank; the
    checkpoint records the condition, the joint model's hash and both widths."""
    model_a = joint_models[0]
    store = Path(BuildLayout(build["root"]).embedding_dir(dir_hash(model_a)[:16]))
    before = sorted(store.glob("*.npz")) if store.is_dir() else []
    seen, ckpt = _train(build, tmp_path / "run", "--condition", "text+text-embedding", "--joint-model", model_a,
                        "--labels", "tiny", "--text-encoder", f"t5:{tiny_t5}", steps=3)
    embedder = ClapEmbedder.from_pretrained(model_a)
    for batch, cond in zip(seen.batches, seen.conds):
        texts = list(batch["text"])
        assert all(t.strip() for t in texts) and cond.text_mask.any(1).all()
        np.testing.assert_allclose(cond.joint.numpy(), embedder.embed_text(texts), atol=1e-5)
        assert cond.joint_mask.all()
    assert len({t for batch in seen.batches for t in batch["text"]}) > 1  # the captions differ, so do the vectors
    assert (sorted(store.glob("*.npz")) if store.is_dir() else []) == before
    assert "joint_bank" not in ckpt["n2m"]
    config = ckpt["n2m"]["config"]
    assert config["conditioning"]["condition"] == "text+text-embedding"
    assert config["conditioning"]["joint_model_sha1"] == dir_hash(model_a)
    assert (config["net"]["text_dim"], config["net"]["joint_dim"]) == (32, 16)

    from n2m.training.module import DiffusionModule  # an empty caption: no tokens, and its joint vector masked out
    joint, mask = DiffusionModule(config)._caption_embeddings(["a calm piano piece", " "], torch.zeros(1))
    assert mask.tolist() == [True, False]
    np.testing.assert_allclose(joint[0].numpy(), embedder.embed_text(["a calm piano piece"])[0], atol=1e-5)


def test_dropout_rates_over_many_training_batches(build, joint_models, tiny_t5, tmp_path):
    """What the network is given during real training steps: over 1,600 examples the text is dropped at 0.3, the
    audio embedding at 0.5 and both at 0.15 (binomial tests), each independently of the other (chi-square)."""
    drops: list[tuple[np.ndarray, np.ndarray]] = []

    class Hook(Callback):
        def on_fit_start(self, trainer, pl_module):
            def record(module, args, kwargs):
                drops.append((~kwargs["text_mask"].any(1).numpy(), ~kwargs["joint_mask"].numpy()))
            pl_module.net.register_forward_pre_hook(record, with_kwargs=True)

    args = _args(build, tmp_path / "run", "--condition", "text+audio-embedding", "--joint-model", joint_models[0],
                 "--labels", "tiny", "--text-encoder", f"t5:{tiny_t5}", "--text-dropout", "0.3", "--audio-dropout",
                 "0.5", "--text-cache", "64", "--lr", "1e-6", steps=25, batch=64, window="0.1")
    assert run_train(args, extra_callbacks=(Hook(),)) == 0
    text = np.concatenate([d[0] for d in drops])
    audio = np.concatenate([d[1] for d in drops])
    assert text.size == 25 * 64
    for hits, p in ((text.sum(), 0.3), (audio.sum(), 0.5), ((text & audio).sum(), 0.15)):
        assert scipy.stats.binomtest(int(hits), text.size, p).pvalue > 1e-3, (hits / text.size, p)
    table = np.array([[np.sum(~text & ~audio), np.sum(~text & audio)], [np.sum(text & ~audio), np.sum(text & audio)]])
    assert scipy.stats.chi2_contingency(table).pvalue > 1e-3


def test_joint_noise_moves_what_the_network_sees_and_keeps_the_bank_clean(build, joint_models, tmp_path):
    """``--joint-noise 0.5``: in real training steps the network receives unit vectors off each clip's own embedding
    (and never the embedding itself), the checkpoint records the level, and the text bridge's bank keeps the clean
    embeddings (the noise is a training perturbation, not a property of the clip)."""
    given: list[np.ndarray] = []

    class Hook(Callback):
        def on_fit_start(self, trainer, pl_module):
            def record(module, args, kwargs):
                given.append(kwargs["joint"][kwargs["joint_mask"]].detach().numpy().copy())
            pl_module.net.register_forward_pre_hook(record, with_kwargs=True)

    seen, ckpt = _train(build, tmp_path / "run", "--condition", "audio-embedding", "--joint-model", joint_models[0],
                        "--no-meta-text", "--joint-noise", "0.5", "--audio-dropout", "0", steps=4,
                        callbacks=(Hook(),))
    clean = [c.joint.numpy() for c in seen.conds]
    assert len(given) == len(clean) == 4
    for moved, own in zip(given, clean):
        np.testing.assert_allclose(np.linalg.norm(moved, axis=1), 1.0, atol=1e-5)
        cosine = (moved * own).sum(1) / np.linalg.norm(own, axis=1)
        assert (cosine < 0.999).all() and (cosine > 0.0).all(), cosine  # 16 dims: 1/sqrt(1.25) = 0.89 on average
    assert ckpt["n2m"]["config"]["diffusion"]["joint_noise"] == 0.5
    bank = ckpt["n2m"]["joint_bank"]
    by_key = {k: v for batch, cond in zip(seen.batches, seen.conds) for k, v in zip(batch["key"], cond.joint.numpy())}
    np.testing.assert_allclose(bank["vectors"].numpy(), np.stack([by_key[k] for k in bank["keys"]]), atol=1e-6)


def test_melody_is_the_windows_chroma_as_extra_input_channels(build, tiny_t5, tmp_path):
    """``--melody``: the batch's melody is the one-hot chroma of the clip (computed here from the decoded clip at the
    generator's 3.2 kHz rate), and the network's input is ``x_t`` with those 12 channels beside it."""
    stem_inputs = []

    class Stem(Callback):
        def on_fit_start(self, trainer, pl_module):
            pl_module.net.stem.register_forward_pre_hook(lambda m, args: stem_inputs.append(args[0].detach()))

    seen = Batches()
    args = _args(build, tmp_path / "run", "--melody", "--labels", "tiny", "--text-encoder", f"t5:{tiny_t5}",
                 window="2", steps=1)
    assert run_train(args, extra_callbacks=(seen, Stem())) == 0
    batch, cond = seen.batches[0], seen.conds[0]
    clips = _clips(build)
    assert batch["melody"].shape == (3, 12, 6400) == cond.melody.shape
    for key, melody in zip(batch["key"], batch["melody"].numpy()):
        direct = melody_features(*clips[key], frame_rate=3200)[:, :6400]
        np.testing.assert_array_equal(melody, direct)
        assert melody.sum(0).max() == 1.0 and melody.any()  # one-hot frames, voiced
    assert stem_inputs[0].shape == (3, 13, 6400)
    torch.testing.assert_close(stem_inputs[0][:, 1:], batch["melody"])
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["n2m"]["config"]["conditioning"]["melody"] is True
    assert ckpt["n2m"]["config"]["net"]["melody_channels"] == 12


@pytest.mark.parametrize("stage, extra, message", [
    ("generator", ["--condition", "audio-embedding"], "needs --joint-model DIR"),
    ("generator", ["--joint-model", "JOINT"], "--joint-model is for the joint-embedding conditions"),
    ("generator", ["--condition", "text+text-embedding", "--text-encoder", "T5"], "needs --joint-model DIR"),
    ("generator", ["--condition", "audio-embedding", "--joint-model", "JOINT", "--text-encoder", "T5"],
     "drop --text-encoder"),
    ("generator", ["--condition", "audio-embedding", "--joint-model", "/nowhere"], "not a joint model directory"),
    ("sr_cascader", ["--condition", "audio-embedding", "--joint-model", "JOINT"], "takes no text"),
    ("cascader", ["--melody", "--text-encoder", "T5"], "--melody is for the generator stages"),
    ("generator", ["--audio-dropout", "1.5"], None),
    ("generator", ["--joint-noise", "0.5"], "--joint-noise is for the joint-embedding conditions"),
    ("generator", ["--condition", "audio-embedding", "--joint-model", "JOINT", "--joint-noise", "-1"], None),
])
def test_misuse_is_a_one_line_error(build, joint_models, tiny_t5, tmp_path, capsys, stage, extra, message):
    from n2m.cli import main

    extra = [{"JOINT": joint_models[0], "T5": f"t5:{tiny_t5}"}.get(a, a) for a in extra]
    argv = ["train", "--stage", stage, "--build", build["root"], "--preset", "tiny", "--out", str(tmp_path / "x"),
            "--dry-run", *extra]
    try:
        code = main(argv)
    except SystemExit as exit:  # a value argparse refuses
        code = exit.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and (message is None or message in err), err
