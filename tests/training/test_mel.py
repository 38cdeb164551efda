"""The mel frontend against librosa (the reference implementation of the same definition)."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from n2m.training.mel import DB_MAX, DB_MIN, MelConfig, MelFrontend, frames_for, mel_filterbank, unit_to_db


def _signal(seconds: float = 1.5, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(int(16000 * seconds)) / 16000
    chirp = 0.5 * np.sin(2 * np.pi * (200 * t + 1500 * t**2))
    return (chirp + 0.05 * rng.standard_normal(t.shape) * (t > 0.7)).astype(np.float32)


def _librosa_power(y: np.ndarray) -> np.ndarray:
    return librosa.feature.melspectrogram(
        y=y, sr=16000, n_fft=1024, hop_length=160, win_length=640, n_mels=80, fmin=0.0, fmax=8000.0,
        pad_mode="constant", power=2.0,
    )


def test_filterbank_matches_librosa():
    ours = mel_filterbank(MelConfig())
    ref = librosa.filters.mel(sr=16000, n_fft=1024, n_mels=80, fmin=0.0, fmax=8000.0)
    assert ours.shape == (80, 513)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-8)


def test_power_and_scaled_log_mel_match_librosa():
    y = _signal()
    ref_power = _librosa_power(y)[:, : len(y) // 160]
    power = MelFrontend().power(torch.from_numpy(y)[None])[0].double().numpy()
    assert power.shape == ref_power.shape == (80, 150)
    np.testing.assert_allclose(power, ref_power, rtol=2e-4, atol=1e-6 * ref_power.max())

    ref_db = np.clip(librosa.power_to_db(ref_power, ref=1.0, amin=10 ** (DB_MIN / 10), top_db=None), DB_MIN, DB_MAX)
    ref_unit = 2 * (ref_db - DB_MIN) / (DB_MAX - DB_MIN) - 1
    unit = MelFrontend()(torch.from_numpy(y)[None, None])[0].numpy()
    np.testing.assert_allclose(unit, ref_unit, atol=2e-4)
    assert unit.min() >= -1 and unit.max() <= 1


def test_frames_align_with_hop_and_30_s_gives_3000_frames():
    assert frames_for(480_000) == 3000
    mel = MelFrontend()(torch.zeros(2, 16000 * 3 + 77))
    assert mel.shape == (2, 80, 300)
    assert torch.all(mel == -1.0)  # silence sits on the floor


def test_db_round_trip_and_batch_independence():
    y = torch.from_numpy(np.stack([_signal(1.0, 1), _signal(1.0, 2)]))
    both = MelFrontend()(y)
    np.testing.assert_allclose(both[1].numpy(), MelFrontend()(y[1:])[0].numpy(), atol=1e-6)
    db = unit_to_db(both)
    assert float(db.min()) >= DB_MIN and float(db.max()) <= DB_MAX


@pytest.mark.parametrize("scale", [1.0, 0.1])
def test_level_change_shifts_db_by_exact_amount(scale):
    y = torch.from_numpy(_signal(1.0))[None] * 0.5
    loud = unit_to_db(MelFrontend()(y))
    quiet = unit_to_db(MelFrontend()(y * scale))
    voiced = (loud > DB_MIN + 40) & (loud < DB_MAX)
    np.testing.assert_allclose((loud - quiet)[voiced].numpy(), -20 * np.log10(scale), atol=1e-3)
