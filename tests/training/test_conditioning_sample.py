"""Sampling stages trained beyond captions (issue 16, items 1-3): the joint model's text embedding in place of the audio
embedding, ``n2m sample --audio-prompt`` with its sidecar, double guidance through the sampling entry point, the joint
model's identity, and ``--melody``."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from builders import tiny_checkpoint, tone

from n2m.clap import ClapEmbedder
from n2m.errors import UserError
from n2m.melody import melody_features
from n2m.provenance import dir_hash
from n2m.training.conditioning import read_audio_file, read_audio_prompt
from n2m.training.joint_bank import TextBridge
from n2m.training.sampling import Prompt, generate, load_cascade

SECONDS = 0.5


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory, tiny_t5, joint_models) -> dict[str, Path]:
    """Untrained tiny stages as ``n2m train`` checkpoints: three generators (text + audio embedding, audio embedding
    alone with a bank of 12 clips, melody) trained with joint model A, and a plain text cascader and super-resolution
    cascader."""
    root = tmp_path_factory.mktemp("cond_ckpts")
    t5, joint = f"t5:{tiny_t5}", ("--joint-model", joint_models[0])
    return {
        "text+audio": tiny_checkpoint("generator", root / "gen_ta.ckpt", t5, voiced=True,
                                      extra=("--condition", "text+audio-embedding", *joint)),
        "audio": tiny_checkpoint("generator", root / "gen_a.ckpt", None, seed=1,
                                 extra=("--condition", "audio-embedding", *joint), bank=12),
        "melody": tiny_checkpoint("generator", root / "gen_m.ckpt", t5, seed=2, extra=("--melody",)),
        "text": tiny_checkpoint("generator", root / "gen_t.ckpt", t5, seed=3),
        "text+text": tiny_checkpoint("generator", root / "gen_tt.ckpt", t5, seed=6,
                                     extra=("--condition", "text+text-embedding", *joint)),
        "cascader": tiny_checkpoint("cascader", root / "cascader.ckpt", t5, seed=4),
        "sr_cascader": tiny_checkpoint("sr_cascader", root / "sr.ckpt", None, seed=5),
    }


def _cascade(ckpts: dict[str, Path], generator: str) -> dict[str, Path]:
    return {"generator": ckpts[generator], "cascader": ckpts["cascader"], "sr_cascader": ckpts["sr_cascader"]}


def _wav(path: Path, seconds: float, seed: int, rate: int = 22050) -> Path:
    sf.write(str(path), tone(seed, seconds, rate)[0], rate)
    return path


def _record(net, key: str, store: list) -> None:
    """Keep ``key`` of every call of ``net`` (``"batch"``: the batch size)."""
    def hook(module, args, kwargs):
        store.append(args[0].shape[0] if key == "batch" else kwargs[key].detach().clone())
    net.register_forward_pre_hook(hook, with_kwargs=True)


def test_audio_prompt_cli_writes_the_prompt_and_both_scales_in_the_sidecar(ckpts, joint_models, tmp_path):
    from n2m.cli import main
    from n2m.training.export import export_checkpoint

    prompt = _wav(tmp_path / "style.wav", 3.0, seed=11)
    exported = export_checkpoint(ckpts["text+audio"], tmp_path / "export" / "generator")  # the conditioning travels
    spec = ",".join(f"{k}={v}" for k, v in {**_cascade(ckpts, "text+audio"), "generator": exported}.items())
    common = ["sample", "--cascade", "waveform", "--checkpoints", spec, "--seconds", str(SECONDS), "--steps", "2",
              "--audio-prompt", str(prompt), "--audio-prompt-seconds", "1", "--quiet"]
    out = tmp_path / "both"
    assert main([*common, "--prompts", "a calm piano piece", "--out", str(out), "--guidance", "2",
                 "--audio-guidance", "3"]) == 0
    assert sf.info(str(out / "0000.wav")).frames == SECONDS * 24000
    meta = json.loads((out / "0000.json").read_text())
    assert meta["audio_prompt"] == {"path": str(prompt.resolve()), "sha256": hashlib.sha256(prompt.read_bytes())
                                    .hexdigest(), "offset_s": 1.0, "seconds": 1.0}  # the centre second of 3 s
    assert meta["guidance"]["generator"] == {"mode": "double", "text": 2.0, "audio": 3.0}
    assert meta["guidance"]["cascader"] == {"mode": "text", "text": 2.0, "audio": None}  # a plain text stage
    assert "sr_cascader" not in meta["guidance"] and meta["melody"] is None
    assert meta["stages"]["generator"]["kind"] == "export"
    assert meta["stages"]["generator"]["conditioning"]["joint_model_sha1"] == dir_hash(joint_models[0])

    alone = tmp_path / "alone"  # no text prompt at all: one prompt without text, audio guidance alone
    assert main([*common, "--out", str(alone), "--audio-guidance", "4"]) == 0
    meta = json.loads((alone / "0000.json").read_text())
    assert meta["prompt"] == "" and meta["guidance"]["generator"] == {"mode": "audio", "text": None, "audio": 4.0}


def test_text_prompts_cross_to_an_audio_embedding_stage_through_its_bank_and_each_sidecar_names_its_matches(
        ckpts, joint_models, tmp_path):
    """``n2m sample`` with text prompts on an exported audio-embedding generator: the bank travels in the export, and
    each clip's sidecar records the bridge and the training clips its own prompt matched (a numpy search here)."""
    from n2m.cli import main
    from n2m.training.export import export_checkpoint

    exported = export_checkpoint(ckpts["audio"], tmp_path / "export" / "generator")
    assert (exported / "joint_bank.safetensors").is_file()
    spec = ",".join(f"{k}={v}" for k, v in {**_cascade(ckpts, "audio"), "generator": exported}.items())
    prompts = ["a calm piano piece", "loud fast drums and distorted guitar"]
    out = tmp_path / "bridged"
    assert main(["sample", "--cascade", "waveform", "--checkpoints", spec, "--seconds", str(SECONDS), "--steps", "1",
                 "--prompts", *prompts, "--bridge-neighbours", "3", "--batch-size", "2", "--out", str(out),
                 "--quiet"]) == 0
    bank = torch.load(ckpts["audio"], weights_only=True)["n2m"]["joint_bank"]
    text = ClapEmbedder.from_pretrained(joint_models[0]).embed_text(prompts)
    for i, t in enumerate(text):
        cos = bank["vectors"].numpy() @ (t / np.linalg.norm(t))
        record = json.loads((out / f"{i:04d}.json").read_text())["guidance"]["generator"]["text_bridge"]
        assert record["mode"] == "nearest" and record["neighbours"] == 3
        assert [m["key"] for m in record["matches"]] == [bank["keys"][j] for j in np.argsort(-cos)[:3]]
    direct = tmp_path / "direct"
    assert main(["sample", "--cascade", "waveform", "--checkpoints", spec, "--seconds", str(SECONDS), "--steps", "1",
                 "--prompts", prompts[0], "--text-bridge", "direct", "--out", str(direct), "--quiet"]) == 0
    assert json.loads((direct / "0000.json").read_text())["guidance"]["generator"]["text_bridge"] == {"mode": "direct"}


def test_the_generator_sees_the_excerpts_embedding_or_the_prompts_joint_text_embedding(ckpts, joint_models,
                                                                                     tmp_path):
    """An audio prompt: the joint embedding given to the network is the joint model's embedding of the centre excerpt
    (computed here from the file); a text prompt to an audio-embedding stage: by default the unit mean of the stage's
    bank vectors nearest the prompt's joint text embedding (a numpy search here), with ``direct`` that text embedding
    itself (MusicLM's substitution); an empty prompt: the dropped condition."""
    embedder = ClapEmbedder.from_pretrained(joint_models[0])
    wav = _wav(tmp_path / "p.wav", 4.0, seed=3, rate=16000)
    models = load_cascade("waveform", _cascade(ckpts, "audio"))
    seen: list = []
    _record(models["generator"].model.net, "joint", seen)
    run = lambda prompts, **kw: generate(prompts, "waveform", models, seconds=SECONDS, steps=1,  # noqa: E731
                                         progress=False, guidance=1.0, audio_guidance=1.0, **kw)
    run([Prompt("a", "")], audio_prompt=read_audio_prompt(str(wav), 2.0))
    samples, _ = sf.read(str(wav), dtype="float32")
    np.testing.assert_allclose(seen[-1][0].numpy(), embedder.embed_audio([samples[16000:48000]], 16000)[0], atol=1e-5)
    text = embedder.embed_text(["a calm piano piece"])[0]
    run([Prompt("t", "a calm piano piece"), Prompt("e", "")], batch_size=2, text_bridge=TextBridge("direct"))
    np.testing.assert_allclose(seen[-1][0].numpy(), text, atol=1e-5)
    assert not seen[-1][1].any()  # the empty prompt's condition is dropped (zeros, masked out)
    bank = torch.load(ckpts["audio"], weights_only=True)["n2m"]["joint_bank"]["vectors"].numpy()
    for k in (1, 4):
        run([Prompt("t", "a calm piano piece")], text_bridge=TextBridge(neighbours=k))
        nearest = bank[np.argsort(-(bank @ (text / np.linalg.norm(text))))[:k]].mean(axis=0)
        np.testing.assert_allclose(seen[-1][0].numpy(), nearest / np.linalg.norm(nearest), atol=1e-5)


def test_a_text_embedding_stage_sees_each_prompts_own_joint_text_embedding(ckpts, joint_models, tmp_path):
    """``text+text-embedding``: sampling gives the generator each prompt's joint text embedding itself (no bank, no
    bridge: it trained on text embeddings), beside the caption tokens; an empty prompt's is dropped; the sidecar says
    ``direct``."""
    from n2m.cli import main

    embedder = ClapEmbedder.from_pretrained(joint_models[0])
    models = load_cascade("waveform", _cascade(ckpts, "text+text"))
    assert models["generator"].model.joint_bank is None
    joints, texts = [], []
    _record(models["generator"].model.net, "joint", joints)
    _record(models["generator"].model.net, "text", texts)
    prompts = ["a calm piano piece", "loud fast drums and distorted guitar"]
    generate([Prompt("a", prompts[0]), Prompt("b", prompts[1]), Prompt("e", "")], "waveform", models,
             seconds=SECONDS, steps=1, progress=False, guidance=1.0, batch_size=3)
    np.testing.assert_allclose(joints[0][:2].numpy(), embedder.embed_text(prompts), atol=1e-5)
    assert not joints[0][2].any() and texts[0][:2].abs().sum() > 0
    spec = ",".join(f"{k}={v}" for k, v in _cascade(ckpts, "text+text").items())
    out = tmp_path / "out"
    assert main(["sample", "--cascade", "waveform", "--checkpoints", spec, "--seconds", str(SECONDS), "--steps", "1",
                 "--prompts", prompts[0], "--out", str(out), "--quiet"]) == 0
    meta = json.loads((out / "0000.json").read_text())["guidance"]["generator"]
    assert meta == {"mode": "text", "text": meta["text"], "audio": None, "text_bridge": {"mode": "direct"}}


def test_double_guidance_scales_at_zero_and_one_reduce_to_single_guidance(ckpts, tmp_path):
    """Through :func:`generate` (one DDIM step from pure noise, no clipping, so each generator output is an affine
    function of the guided eps): alpha = 0 is the unconditional sample, beta = 0 the sample guided by the audio prompt
    alone (the same as sampling with no text), beta = 1 plain guidance of the joint condition, alpha = 1 guidance of
    the text over the audio-only model; the reduced cases run the network on 2B or B examples, the general one on 3B."""
    models = load_cascade("waveform", _cascade(ckpts, "text+audio"))
    calls: list = []
    _record(models["generator"].model.net, "batch", calls)
    audio = read_audio_prompt(str(_wav(tmp_path / "p.wav", 2.0, seed=5)), 1.0)

    def gen(text: str, prompt, guidance: float, alpha: float | None = None) -> np.ndarray:
        calls.clear()
        result = generate([Prompt("p", text)], "waveform", models, seconds=SECONDS, steps=1, sampler="ddim",
                          clip="none", keep_stages=True, progress=False, audio_prompt=prompt,
                          guidance={"generator": guidance}, audio_guidance=alpha)[0]
        gen.calls = list(calls)
        return result.stages["generator"][0].astype(np.float64)

    text = "a calm piano piece"
    e_ta = gen(text, audio, 1.0, 1.0)  # the model under text and audio
    e_a = gen("", audio, 1.0, 1.0)  # no text: the audio prompt alone, unguided
    e_0 = gen("", None, 1.0)  # nothing to condition on
    scale = np.abs(e_0).max()
    close = lambda got, want: np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * scale)  # noqa: E731
    close(gen(text, audio, 4.0, 0.0), e_0)
    assert gen.calls == [1]
    close(gen(text, audio, 0.0, 3.0), gen("", audio, 1.0, 3.0))
    assert gen.calls == [2]
    close(gen(text, audio, 1.0, 3.0), e_0 + 3.0 * (e_ta - e_0))
    assert gen.calls == [2]
    close(gen(text, audio, 4.0, 1.0), e_a + 4.0 * (e_ta - e_a))
    assert gen.calls == [2]
    close(gen(text, audio, 4.0, 3.0), e_0 + 3.0 * (e_a + 4.0 * (e_ta - e_a) - e_0))
    assert gen.calls == [3]
    assert not np.allclose(e_ta, e_a) and not np.allclose(e_a, e_0)  # the conditions do reach the network


def test_sampling_refuses_another_joint_model_and_finds_a_moved_one(ckpts, joint_models, tiny_t5, tmp_path):
    model_a, model_b = joint_models
    models = load_cascade("waveform", _cascade(ckpts, "audio"))
    run = lambda **kw: generate([Prompt("x", "rock")], "waveform", models, seconds=SECONDS, steps=1,  # noqa: E731
                                progress=False, **kw)
    with pytest.raises(UserError, match="is not the joint model the generator stage was trained with") as err:
        run(joint_model=model_b)
    assert "\n" not in str(err.value)
    copy = shutil.copytree(model_a, tmp_path / "elsewhere" / "joint")
    assert len(run(joint_model=str(copy))) == 1  # the same content elsewhere is accepted

    moved_from = shutil.copytree(model_a, tmp_path / "trained_with")  # a checkpoint recording this folder ...
    ckpt = tiny_checkpoint("generator", tmp_path / "gen.ckpt", None, extra=(
        "--condition", "audio-embedding", "--joint-model", str(moved_from)))
    moved_from.rename(tmp_path / "renamed")  # ... which then moves away
    moved = load_cascade("waveform", {**_cascade(ckpts, "audio"), "generator": ckpt})
    with pytest.raises(UserError, match="joint model clap:.*not found.*pass --joint-model DIR"):
        generate(["rock"], "waveform", moved, seconds=SECONDS, steps=1, progress=False)


@pytest.mark.parametrize("case, message", [
    ("missing", "--audio-prompt .*missing.wav: no such file"),
    ("not audio", "--audio-prompt .*notes.wav"),
    ("text stage only", "no stage of this cascade was trained with --condition audio-embedding"),
    ("both to one slot", "give a text prompt or --audio-prompt, not both"),
    ("no prompt", "give --prompts, --prompts-file or --audio-prompt"),
    ("no melody", "was trained with --melody: pass --melody FILE"),
    ("melody nobody takes", "no stage of this cascade was trained with --melody"),
    ("nearest without a bank", "--text-bridge nearest: the generator stage holds no bank"),
    ("nearest on text embeddings", "--text-bridge nearest: the generator stage trained on captions' joint text"),
    ("audio prompt to text embeddings", "learnt captions' text embeddings .* it takes text prompts only"),
])
def test_bad_prompting_is_a_one_line_error(ckpts, tmp_path, capsys, case, message):
    from n2m.cli import main

    good = _wav(tmp_path / "good.wav", 1.0, seed=1)
    (tmp_path / "notes.wav").write_text("these are not samples\n")
    generator, extra = {
        "missing": ("audio", ["--audio-prompt", str(tmp_path / "missing.wav")]),
        "not audio": ("audio", ["--audio-prompt", str(tmp_path / "notes.wav")]),
        "text stage only": ("text", ["--prompts", "rock", "--audio-prompt", str(good)]),
        "both to one slot": ("audio", ["--prompts", "rock", "--audio-prompt", str(good)]),
        "no prompt": ("text", []),
        "no melody": ("melody", ["--prompts", "rock"]),
        "melody nobody takes": ("text", ["--prompts", "rock", "--melody", str(good)]),
        "nearest without a bank": ("text+audio", ["--prompts", "rock", "--text-bridge", "nearest"]),
        "nearest on text embeddings": ("text+text", ["--prompts", "rock", "--text-bridge", "nearest"]),
        "audio prompt to text embeddings": ("text+text", ["--prompts", "rock", "--audio-prompt", str(good)]),
    }[case]
    spec = ",".join(f"{k}={v}" for k, v in _cascade(ckpts, generator).items())
    argv = ["sample", "--cascade", "waveform", "--checkpoints", spec, "--out", str(tmp_path / "out"), "--seconds",
            str(SECONDS), "--steps", "1", "--quiet", *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert re.search(message, err), err
    assert not (tmp_path / "out" / "0000.wav").exists()


def test_melody_file_becomes_the_generators_extra_input_channels(ckpts, tmp_path):
    """The generator's input is ``x_t`` beside the melody of the file from its start (computed here at 3.2 kHz),
    zero-padded past the file's end; another melody gives another sample."""
    models = load_cascade("waveform", _cascade(ckpts, "melody"))
    stems: list = []
    models["generator"].model.net.stem.register_forward_pre_hook(lambda m, args: stems.append(args[0].clone()))
    short = _wav(tmp_path / "short.wav", 0.3, seed=2)  # shorter than the 0.5 s sample
    other = _wav(tmp_path / "other.wav", 1.0, seed=9)
    run = lambda melody: generate([Prompt("m", "rock")], "waveform", models, seconds=SECONDS, steps=1,  # noqa: E731
                                  progress=False, melody=read_audio_file(str(melody), "--melody"))[0]
    a = run(short)
    samples, rate = sf.read(str(short), dtype="float32")
    expected = melody_features(samples, rate, 3200)  # [12, 960] of the 1600 frames
    frames = stems[0][0, 1:].numpy()
    assert stems[0].shape[1] == 13 and frames.shape[1] >= 1600
    np.testing.assert_array_equal(frames[:, :expected.shape[1]], expected)
    assert not frames[:, expected.shape[1]:].any()
    b = run(other)
    assert not np.allclose(a.audio, b.audio)
