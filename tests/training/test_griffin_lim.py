"""The classical vocoder (n2m.training.griffin_lim): its mel inversion against scipy's NNLS, its round trip through the
log-mel frontend, and its place in the spectrogram cascade through ``n2m sample``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from builders import tiny_checkpoint
from scipy.optimize import nnls

from n2m.training.griffin_lim import GriffinLim
from n2m.training.mel import MelFrontend, unit_to_db
from n2m.training.sampling import _stage_seed


def _music(seconds: float = 3.0, sr: int = 16000) -> np.ndarray:
    """A chord of decaying harmonic notes with onsets, ``[T]`` float32 (partials up to 4 kHz)."""
    t = np.arange(int(seconds * sr)) / sr
    out = np.zeros_like(t)
    for k, f0 in enumerate((220.0, 277.2, 329.6, 440.0)):
        onset = 0.5 * k
        env = np.where(t >= onset, np.exp(-(t - onset) * 1.5), 0.0)
        for h in range(1, 9):
            out += env * np.sin(2 * np.pi * f0 * h * t) / h
    return (0.2 * out / np.abs(out).max()).astype(np.float32)


def test_mel_inversion_is_as_close_as_scipy_nnls_and_non_negative():
    """Step 2: the linear power whose mel projection is closest to the target, per frame, against scipy's exact NNLS
    (Lawson-Hanson) on the same problem; relative residuals within 2 points of the exact optimum."""
    frontend, inversion = MelFrontend(), GriffinLim()
    mel = frontend(torch.from_numpy(_music())[None])  # [1, 80, F]
    power = inversion.linear_power(mel)  # [1, 513, F]
    assert (power >= 0).all()
    basis = inversion.filters.double().numpy()
    target = 10.0 ** (unit_to_db(mel).double().numpy()[0] / 10.0)
    for frame in (40, 120, 250):
        _, exact = nnls(basis, target[:, frame])
        ours = np.linalg.norm(basis @ power[0, :, frame].double().numpy() - target[:, frame])
        scale = np.linalg.norm(target[:, frame])
        assert ours / scale <= exact / scale + 0.02, (frame, ours / scale, exact / scale)


def test_round_trip_through_the_frontend_keeps_the_spectrogram_and_the_level():
    """Audio -> log-mel -> Griffin-Lim -> log-mel: the spectrogram comes back (the frontend itself is tested against
    librosa) and so does the RMS level; the phase is new, so the waveform itself does not."""
    frontend, inversion = MelFrontend(), GriffinLim()
    audio = torch.from_numpy(_music())[None]
    mel = frontend(audio)
    out = inversion(mel, seed=3)
    assert out.shape == (1, 1, mel.shape[-1] * 160)
    back = frontend(out[:, 0])
    assert float(((back - mel) ** 2).mean()) < 0.05 * float(mel.var())
    level = 20 * np.log10(float(out.pow(2).mean().sqrt()) / float(audio[:, : out.shape[-1]].pow(2).mean().sqrt()))
    assert abs(level) < 1.0
    assert torch.equal(out, inversion(mel, seed=3)) and not torch.equal(out, inversion(mel, seed=4))


def test_refuses_settings_without_meaning():
    for bad in ({"iterations": 0}, {"momentum": 1.0}, {"momentum": -0.1}):
        with pytest.raises(ValueError):
            GriffinLim(**bad)


@pytest.fixture(scope="module")
def spec_models(tmp_path_factory, tiny_t5) -> dict[str, Path]:
    work = tmp_path_factory.mktemp("gl")
    return {stage: tiny_checkpoint(stage, work / f"{stage}.ckpt", f"t5:{tiny_t5}", seed=i)
            for i, stage in enumerate(("spec_generator", "sr_cascader"))}


def test_griffin_lim_takes_the_vocoder_slot_of_the_spectrogram_cascade(spec_models, tmp_path):
    from n2m.cli import main

    checkpoints = f"spec_generator={spec_models['spec_generator']},vocoder=griffin-lim,sr_cascader={spec_models['sr_cascader']}"
    out = tmp_path / "out"
    argv = ["sample", "--prompts", "slow ambient pad", "--cascade", "spectrogram", "--checkpoints", checkpoints,
            "--out", str(out), "--seconds", "2", "--steps", "2", "--keep-stages", "--quiet"]
    assert main(argv) == 0
    info = sf.info(str(out / "0000.wav"))
    assert (info.samplerate, info.frames) == (24000, 48000)
    mel = torch.from_numpy(np.load(out / "0000.mel.npy"))[None]
    heard, _ = sf.read(str(out / "0000.16k.wav"), dtype="float32")
    meta = json.loads((out / "0000.json").read_text())
    expected = GriffinLim()(mel, seed=_stage_seed(meta["seed"], "vocoder"))[0, 0].numpy()
    # the 16 kHz stage is the inversion of the kept mel (written clipped to [-1, 1])
    np.testing.assert_allclose(heard, np.clip(expected, -1.0, 1.0), atol=1e-4)
    vocoder = meta["stages"]["vocoder"]
    assert (vocoder["kind"], vocoder["path"], vocoder["preset"]) == ("classical", "griffin-lim", None)
    assert len(vocoder["sha1"]) == 40


def test_griffin_lim_in_another_slot_is_refused(spec_models, tmp_path, capsys):
    from n2m.cli import main

    checkpoints = f"spec_generator=griffin-lim,vocoder=griffin-lim,sr_cascader={spec_models['sr_cascader']}"
    argv = ["sample", "--prompts", "x", "--cascade", "spectrogram", "--checkpoints", checkpoints,
            "--out", str(tmp_path / "o"), "--seconds", "1", "--steps", "1", "--quiet"]
    assert main(argv) == 2
    assert "griffin-lim is a vocoder model, but the spectrogram cascade needs a spec_generator here" in capsys.readouterr().err
