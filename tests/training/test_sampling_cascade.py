"""End to end: tiny stage models (saved as n2m training checkpoints, exported by the real export code) through both
cascades to 30 s of 24 kHz audio, via the Python API and the ``n2m sample`` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from builders import tiny_checkpoint

import n2m.training.sampling as sampling
from n2m.errors import UserError
from n2m.training.cascade import load_stage
from n2m.training.sampling import Prompt, generate, load_cascade

STAGES = ("generator", "cascader", "sr_cascader", "spec_generator", "vocoder")


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory, tiny_t5) -> Path:
    """Generators and the spectrogram models exported (n2m export format), cascaders left as .ckpt files."""
    from n2m.training.export import export_checkpoint

    root = tmp_path_factory.mktemp("models")
    work = tmp_path_factory.mktemp("ckpts")
    for stage in STAGES:
        ckpt = tiny_checkpoint(stage, work / f"{stage}.ckpt", f"t5:{tiny_t5}", seed=STAGES.index(stage))
        if stage in ("generator", "spec_generator", "vocoder"):
            export_checkpoint(ckpt, root / stage)
        else:
            (root / f"{stage}.ckpt").write_bytes(ckpt.read_bytes())
    return root


def test_waveform_cascade_cli_writes_30_s_at_24_khz(models_dir, tmp_path):
    from n2m.cli import main

    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"id": "calm-01", "text": "a calm piano piece"}\n{"id": "rock", "text": "loud rock drums"}\n')
    out = tmp_path / "out"
    argv = ["sample", "--prompts-file", str(prompts), "--cascade", "waveform", "--checkpoints", str(models_dir),
            "--out", str(out), "--steps", "2", "--sampler", "generator=ancestral,cascader=ddim,sr_cascader=dpmpp",
            "--keep-stages", "--batch-size", "2", "--quiet", "--seed", "7"]
    assert main(argv) == 0
    info = sf.info(str(out / "calm-01.wav"))
    assert (info.samplerate, info.frames, info.channels) == (24000, 720000, 1)
    assert sf.info(str(out / "calm-01.3k2.wav")).frames == 96000
    assert sf.info(str(out / "rock.16k.wav")).frames == 480000
    meta = json.loads((out / "rock.json").read_text())
    assert meta["id"] == meta["prompt_id"] == "rock" and meta["prompt"] == "loud rock drums"
    assert meta["run_seed"] == 7 and meta["seed"] == sampling.sample_seed(7, "rock", 0)
    assert meta["stages"]["cascader"]["sha1"] and meta["stages"]["generator"]["kind"] == "export"
    assert meta["sampler_settings"]["cascader"]["sampler"] == "ddim"
    assert meta["sampler_settings"]["cascader"]["guidance"] == 5.0  # the paper's cascader scale
    assert meta["stages"]["generator"]["labels"] == "tiny" and meta["lineage"]["label_sets"] == ["tiny"]
    audio, _ = sf.read(str(out / "calm-01.wav"))
    assert np.isfinite(audio).all() and np.abs(audio).max() > 0
    assert meta["gain_db"] <= 0.0  # scaled down only where the clip peaked above full scale

    mtime = (out / "rock.wav").stat().st_mtime_ns
    assert main(argv) == 0  # done already: nothing is regenerated
    assert (out / "rock.wav").stat().st_mtime_ns == mtime


def test_windowed_cascaders_take_guidance(models_dir):
    """The windows cut the conditioning of the guided batch (its conditional and unconditional halves alike), so a
    text cascader sampled in windows takes a guidance scale other than 1 (its low-fi input was once cut for one half
    only: a size mismatch)."""
    models = load_cascade("waveform", models_dir)
    run = lambda guidance: generate(["a calm piano piece"], "waveform", models, seconds=1.5, steps=2,  # noqa: E731
                                    guidance=guidance, window_s=0.75, progress=False, keep_stages=True)[0]
    guided, plain = run(3.0), run(1.0)
    assert guided.audio.shape == (36_000,) and np.isfinite(guided.audio).all()
    assert not np.allclose(guided.stages["cascader"][0], plain.stages["cascader"][0])


def test_spectrogram_cascade_cli_writes_30_s_and_keeps_the_mel(models_dir, tmp_path):
    from n2m.cli import main

    out = tmp_path / "spec"
    argv = ["sample", "--prompts", "slow ambient pad", "--cascade", "spectrogram", "--checkpoints", str(models_dir),
            "--out", str(out), "--steps", "2", "--sampler", "dpmpp", "--keep-stages", "--quiet",
            "--window-seconds", "vocoder=4,sr_cascader=0"]  # the vocoder in windows cut at mel frames
    assert main(argv) == 0
    info = sf.info(str(out / "0000.wav"))
    assert (info.samplerate, info.frames) == (24000, 720000)
    mel = np.load(out / "0000.mel.npy")
    assert mel.shape == (80, 3000) and np.abs(mel).max() <= 1.0 + 1e-6  # dynamic clipping keeps x0 in range
    assert sf.info(str(out / "0000.16k.wav")).frames == 480000
    meta = json.loads((out / "0000.json").read_text())
    assert meta["sampler_settings"]["vocoder"]["window_s"] == 4.0
    assert meta["sampler_settings"]["vocoder"]["guidance"] == 1.0  # no text, no guidance
    assert set(meta["timing"]["stage_seconds"]) == {"spec_generator", "vocoder", "sr_cascader"}
    assert "prompts" not in meta["config"]
    assert sorted(meta["intermediates"]) == ["0000.16k.wav", "0000.mel.npy"]
    assert sorted(p.name for p in out.iterdir()) == ["0000.16k.wav", "0000.json", "0000.mel.npy", "0000.wav"]  # no tmp


def test_keep_input_band_against_a_second_computation():
    """The crossfade written out with numpy and scipy.signal.resample (not the module's fft_upsample)."""
    import scipy.signal
    import torch

    from n2m.training.lowfi import keep_input_band

    rng = np.random.default_rng(0)
    prev, out = rng.standard_normal((2, 1, 800)), rng.standard_normal((2, 1, 1200))  # "16 kHz" in, "24 kHz" out
    position = np.arange(601) / 400.0  # bin k of the output over the input's Nyquist bin (800 / 2)
    weight = np.where(position <= 0.85, 1.0, np.where(position >= 0.95, 0.0,
                                                      0.5 + 0.5 * np.cos(np.pi * (position - 0.85) / 0.10)))
    upsampled = scipy.signal.resample(prev, 1200, axis=-1)
    expected = np.fft.irfft(weight * np.fft.rfft(upsampled) + (1 - weight) * np.fft.rfft(out), n=1200)
    got = keep_input_band(torch.from_numpy(out).float(), torch.from_numpy(prev).float()).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-4)
    spectrum = np.fft.rfft(got)
    np.testing.assert_allclose(spectrum[..., :340], np.fft.rfft(upsampled)[..., :340], atol=2e-3)  # below 0.85
    np.testing.assert_allclose(spectrum[..., 381:], np.fft.rfft(out)[..., 381:], atol=2e-3)  # above 0.95
    with pytest.raises(ValueError, match="crossfade"):
        keep_input_band(torch.zeros(1, 1, 12), torch.zeros(1, 1, 8), band=(0.9, 0.8))


def test_keep_input_band_in_the_cascade(models_dir):
    """With --keep-input-band the 24 kHz clip's band below 0.85 x 8 kHz is the 16 kHz vocoder output's, recorded in
    the settings; the cascader's own band above 0.95 x 8 kHz is what it makes without the flag."""
    from n2m.training.lowfi import fft_upsample

    models = load_cascade("spectrogram", models_dir)
    run = lambda keep: generate([Prompt("x", "jazz")], "spectrogram", models, seconds=1.0, steps=2, sampler="dpmpp",  # noqa: E731
                                progress=False, keep_stages=True, keep_input_band=keep)[0]
    kept, plain = run(True), run(False)
    assert kept.metadata["settings"]["sr_cascader"]["keep_input_band"] is True
    assert plain.metadata["settings"]["sr_cascader"]["keep_input_band"] is False
    scale = lambda r: r.audio / 10 ** (r.metadata["gain_db"] / 20)  # noqa: E731  undo the full-scale fit
    voc, rate = kept.stages["vocoder"]
    assert rate == 16000 and np.allclose(voc, plain.stages["vocoder"][0])  # the same run up to the last stage
    low = np.fft.rfft(fft_upsample(voc.astype(np.float32), len(kept.audio)))
    got, own = np.fft.rfft(scale(kept)), np.fft.rfft(scale(plain))
    edge, top = int(0.85 * 8000 * len(kept.audio) / 24000), int(0.95 * 8000 * len(kept.audio) / 24000) + 1
    np.testing.assert_allclose(got[:edge], low[:edge], atol=1e-2 * np.abs(low).max())
    np.testing.assert_allclose(got[top:], own[top:], atol=1e-2 * np.abs(own).max())
    assert not np.allclose(got[:edge], own[:edge], atol=1e-2 * np.abs(own).max())


def test_keep_input_band_from_the_command_line(models_dir, tmp_path):
    from n2m.cli import main

    assert main(["sample", "--prompts", "jazz", "--cascade", "waveform", "--checkpoints", str(models_dir), "--out",
                 str(tmp_path), "--seconds", "1", "--steps", "2", "--keep-input-band", "--quiet"]) == 0
    settings = json.loads((tmp_path / "0000.json").read_text())["sampler_settings"]
    assert settings["cascader"]["keep_input_band"] is settings["sr_cascader"]["keep_input_band"] is True


def test_samples_depend_only_on_their_seed(models_dir):
    models = load_cascade("waveform", models_dir)
    run = lambda prompts, **kw: generate(prompts, "waveform", models, seconds=1.0, steps=3, progress=False, **kw)  # noqa: E731
    prompts = [Prompt("x", "jazz"), Prompt("y", "rock")]
    a = run(prompts, seed=1, batch_size=2)
    b = run(prompts[1:], seed=1, batch_size=1)
    c = run(prompts, seed=2, batch_size=2)
    np.testing.assert_allclose(a[1].audio, b[0].audio, atol=1e-5)
    assert not np.allclose(a[1].audio, c[1].audio, atol=1e-3)
    assert a[0].seed != a[1].seed


def test_models_in_the_wrong_place_are_refused(models_dir):
    with pytest.raises(UserError, match="spec_generator model, but the waveform cascade needs a generator"):
        load_cascade("waveform", {"generator": models_dir / "spec_generator", "cascader": models_dir / "cascader.ckpt",
                                  "sr_cascader": models_dir / "sr_cascader.ckpt"})
    models = load_cascade("waveform", models_dir)
    gen = models["generator"]
    gen.model.config = {**gen.config, "spec": {**gen.config["spec"], "sample_rate": 4000}}
    with pytest.raises(UserError, match="conditioned on 3200 Hz"):
        generate(["x"], "waveform", models, seconds=1.0, steps=1, progress=False)
    with pytest.raises(UserError, match="no spec_generator model in"):
        sampling.resolve_checkpoints("spectrogram", models_dir / "generator")
    with pytest.raises(UserError, match="needs a vocoder checkpoint"):
        sampling.resolve_checkpoints("spectrogram", {"spec_generator": "a", "sr_cascader": "b"})
    with pytest.raises(UserError, match="does not exist"):
        load_stage(models_dir / "nothing.ckpt")


def test_prompt_files_and_stage_values_parse(tmp_path):
    from n2m.training.cascade import per_stage
    from n2m.training.sample_files import rate_label
    from n2m.training.sample_job import read_prompts

    lines = tmp_path / "p.txt"
    lines.write_text("first prompt\n\nsecond prompt\n")
    assert [(p.id, p.text) for p in read_prompts(str(lines))] == [("0000", "first prompt"), ("0001", "second prompt")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "a", "text": "ok"}\n{"text": "no id"}\n')
    with pytest.raises(UserError, match="bad.jsonl:2"):
        read_prompts(str(bad))
    assert per_stage("generator=10,cascader=5", float, "guidance") == {"generator": 10.0, "cascader": 5.0}
    assert per_stage("3", int, "steps") == 3
    with pytest.raises(UserError):
        per_stage("generator=x", float, "guidance")
    assert (rate_label(3200), rate_label(16000), rate_label(24000)) == ("3k2", "16k", "24k")
    with pytest.raises(UserError, match="unique"):
        generate([Prompt("a", "x"), Prompt("a", "y")], "waveform", {}, progress=False)


def test_stage_settings_take_paper_defaults_and_refuse_bad_values():
    stages = ("generator", "cascader", "sr_cascader")
    settings = sampling.stage_settings(stages, sampler={"cascader": "ddim"}, steps={"generator": 20}, guidance=7.0)
    assert [settings[s].sampler for s in stages] == ["ancestral", "ddim", "ancestral"]
    assert [settings[s].steps for s in stages] == [20, 800, 800]
    assert settings["cascader"].gamma == 1.0 and settings["generator"].gamma == 0.0 and settings["cascader"].guidance == 7.0
    with pytest.raises(UserError, match="not in this cascade"):
        sampling.stage_settings(stages, steps={"vocoder": 3})
    with pytest.raises(UserError, match="steps: expected an integer >= 2"):
        sampling.stage_settings(stages, steps=1, spacing="log_snr")
    with pytest.raises(UserError, match="unknown sampler"):
        sampling.stage_settings(stages, sampler="euler")


def test_a_clip_above_full_scale_is_scaled_to_its_peak_not_clipped():
    loud = np.array([0.5, -2.0, 1.0, 0.25], np.float32)
    audio, gain_db = sampling.fit_full_scale(loud)
    assert np.array_equal(audio, np.array([0.25, -1.0, 0.5, 0.125], np.float32))  # every sample halved: the shape is kept
    assert gain_db == pytest.approx(-6.0206, abs=1e-4)  # 20 log10(1/2)
    quiet = np.array([0.5, -1.0, 0.0], np.float32)
    audio, gain_db = sampling.fit_full_scale(quiet)
    assert audio is quiet and gain_db == 0.0
