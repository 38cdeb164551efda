"""musicnn in PyTorch against the original TensorFlow code (golden outputs in ``tests/fixtures/musicnn``, made by its
``make_fixtures.py``), and the front end against librosa computed here: patching, repeat-padding, the float16 trap.

The parity tests need the real weights (``n2m models fetch``, run by ``make setup``) and fail naming that command."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import librosa
import numpy as np
import pytest

from n2m import musicnn
from n2m.errors import UserError
from n2m.models import model_dir
from n2m.musicnn import Musicnn

FIXTURES = Path(__file__).parent / "fixtures" / "musicnn"
MODELS = ("MTT_musicnn", "MSD_musicnn", "MTT_vgg", "MSD_vgg")
TAG_TOLERANCE = 1e-4  # absolute, on probabilities in [0, 1]
FEATURE_TOLERANCE = 1e-4  # relative to the largest magnitude of the layer for that signal


def _signals():
    spec = importlib.util.spec_from_file_location("musicnn_signals", FIXTURES / "signals.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SIGNALS = _signals()


@pytest.fixture(scope="module")
def golden():
    with np.load(FIXTURES / "golden.npz") as data:
        return dict(data)


@pytest.fixture(scope="module")
def waves(golden):
    out = {}
    for name, make in SIGNALS.SIGNALS.items():
        wave = make()
        stats = golden[f"{name}/stats"]
        assert wave.size == stats[0], f"signal {name} changed length since the fixtures were made"
        np.testing.assert_allclose([wave.sum(dtype=np.float64), np.square(wave, dtype=np.float64).sum()], stats[1:],
                                   rtol=1e-6, err_msg=f"signal {name} changed since the fixtures were made")
        out[name] = wave
    return out


def _load(name: str) -> Musicnn:
    try:
        model_dir(name)
    except UserError as err:
        pytest.fail(f"{err} (the golden tests need the real musicnn weights)")
    return Musicnn.from_pretrained(name)


def _close(ours: np.ndarray, reference: np.ndarray, what: str) -> None:
    scale = max(1.0, float(np.abs(reference).max()))
    np.testing.assert_allclose(ours, reference, rtol=0, atol=FEATURE_TOLERANCE * scale, err_msg=what)


@pytest.mark.parametrize("name", MODELS)
def test_outputs_match_tensorflow(name, golden, waves):
    model = _load(name)
    assert model.model_id.startswith(f"musicnn:{name}@") and len(model.model_id.rpartition("@")[2]) == 40
    for signal, wave in waves.items():
        raw = model.layer_outputs(model.patches(wave))  # every layer unreduced, in the original's layout
        np.testing.assert_allclose(raw["taggram"], golden[f"{name}/{signal}/taggram"], rtol=0, atol=TAG_TOLERANCE,
                                   err_msg=f"{name} {signal} taggram")
        _close(raw["logits"], golden[f"{name}/{signal}/logits"], f"{name} {signal} logits")
        for layer in model.layers:
            _close(Musicnn.reduce(layer, raw[layer]), golden[f"{name}/{signal}/{layer}"], f"{name} {signal} {layer}")
            if f"{name}/{signal}/{layer}@values" in golden:
                flat = raw[layer].reshape(raw[layer].shape[0], -1)[:, golden[f"{name}/{layer}@index"]]
                _close(flat, golden[f"{name}/{signal}/{layer}@values"], f"{name} {signal} {layer} unreduced")


def test_analyse_takes_any_rate_and_channels(golden, waves):
    """``analyse`` at 16 kHz is the golden path; a stereo 44.1 kHz copy (soxr up, then down) lands within 1e-3."""
    model = _load("MSD_musicnn")
    wave = waves["chirp"]
    out = model.analyse(wave, 16000)
    assert out.tags == model.tags and out.taggram.shape == (2, 50)
    np.testing.assert_allclose(out.taggram, golden["MSD_musicnn/chirp/taggram"], rtol=0, atol=TAG_TOLERANCE)
    assert {name: value.shape for name, value in out.features.items()} == {
        "timbral": (2, 408), "temporal": (2, 153), "cnn1": (2, 64), "cnn2": (2, 64), "cnn3": (2, 64),
        "mean_pool": (2, 753), "max_pool": (2, 753), "penultimate": (2, 200)}
    _close(out.features["penultimate"], golden["MSD_musicnn/chirp/penultimate"], "analyse penultimate")
    small_batches = model.layer_outputs(model.patches(wave), batch_size=1)
    np.testing.assert_allclose(small_batches["taggram"], out.taggram, rtol=0, atol=1e-5)  # other conv algorithms
    stereo = np.stack([wave, wave])
    up = np.stack([librosa.resample(c, orig_sr=16000, target_sr=44100, res_type="soxr_vhq") for c in stereo])
    np.testing.assert_allclose(model.analyse(up, 44100).taggram, out.taggram, rtol=0, atol=1e-3)


def test_front_end_patches_match_tensorflow_inputs(golden, waves):
    model = _load("MSD_musicnn")
    for signal, wave in waves.items():
        patches = model.patches(wave)
        assert patches.dtype == np.float32 and patches.shape[1:] == (187, 96)
        assert patches.shape[0] == golden[f"{signal}/patches@values"].shape[0]
        flat = patches.reshape(patches.shape[0], -1)[:, golden["patches@index"]]
        np.testing.assert_allclose(flat, golden[f"{signal}/patches@values"], rtol=1e-6, atol=1e-6, err_msg=signal)


def test_tags_are_the_originals_in_order():
    mtt, msd = _load("MTT_vgg"), _load("MSD_musicnn")
    assert len(mtt.tags) == len(msd.tags) == 50
    assert mtt.tags[:4] == ["guitar", "classical", "slow", "techno"] and mtt.tags[-1] == "choral"
    assert msd.tags[:3] == ["rock", "pop", "alternative"] and msd.tags[-1] == "happy"
    assert mtt.layers == ("pool1", "pool2", "pool3", "pool4", "pool5")
    assert msd.layers == ("timbral", "temporal", "cnn1", "cnn2", "cnn3", "mean_pool", "max_pool", "penultimate")


# ---------------------------------------------------------------------------------------------------------------------
# Front end against librosa called here


def _reference_log_mel(wave: np.ndarray) -> np.ndarray:
    """What ``musicnn/extractor.py``'s ``batch_data`` computes (without its float16 cast), ``[frames, 96]``."""
    mel = librosa.feature.melspectrogram(y=wave, sr=16000, hop_length=256, n_fft=512, n_mels=96, pad_mode="reflect").T
    return np.log10(10000 * mel + 1)


def test_patches_hop_and_dropped_remainder():
    wave = SIGNALS.chirp()  # 104000 samples -> 407 frames
    frames = _reference_log_mel(wave)
    assert frames.shape[0] == 1 + wave.size // 256 == 407
    default = musicnn.patches(wave)
    assert default.shape == (2, 187, 96)  # the original's range(0, 407 - 187 + 1, 187): frames 374.. dropped
    np.testing.assert_allclose(default[1], frames[187:374], rtol=1e-6)
    hopped = musicnn.patches(wave, hop_frames=50)
    assert hopped.shape[0] == (407 - 187) // 50 + 1 == 5
    np.testing.assert_allclose(hopped[4], frames[200:387], rtol=1e-6)


def test_short_clip_is_one_repeat_padded_patch():
    wave = SIGNALS.drums()[:16000]  # 1 s -> 63 frames; the original extractor has no patch for it and fails
    frames = _reference_log_mel(wave)
    patch = musicnn.patches(wave)
    assert patch.shape == (1, 187, 96)
    np.testing.assert_allclose(patch[0], np.concatenate([frames, frames, frames])[:187], rtol=1e-6)


def test_front_end_avoids_the_float16_overflow_of_the_original():
    wave = SIGNALS.drums()
    mel = librosa.feature.melspectrogram(y=wave, sr=16000, hop_length=256, n_fft=512, n_mels=96, pad_mode="reflect")
    with np.errstate(over="ignore"):  # batch_data's cast, then its product as numpy >= 2 types it (float16)
        original = np.log10(np.float16(10000) * mel.astype(np.float16) + np.float16(1))
    assert np.isinf(original).any()
    ours = musicnn.log_mel(wave)
    assert ours.dtype == np.float32 and np.isfinite(ours).all()
    np.testing.assert_allclose(ours, np.log10(10000 * mel.T.astype(np.float64) + 1), rtol=1e-6, atol=1e-6)


def test_bad_inputs_are_one_line_errors():
    with pytest.raises(UserError, match="non-empty mono"):
        musicnn.patches(np.zeros(0, np.float32))
    with pytest.raises(UserError, match="non-empty mono"):
        musicnn.patches(np.zeros((2, 100), np.float32))
    with pytest.raises(UserError, match="hop_frames"):
        musicnn.patches(np.zeros(16000, np.float32), hop_frames=0)
    with pytest.raises(UserError, match=r"\[C, T\] or \[T\]"):
        _load("MTT_vgg").analyse(np.zeros((1, 2, 100), np.float32), 16000)


def test_missing_model_names_the_fetch_command(tmp_path, monkeypatch):
    monkeypatch.setenv("N2M_MODELS", str(tmp_path))
    with pytest.raises(UserError, match="model MSD_vgg is not installed: run `n2m models fetch`"):
        Musicnn.from_pretrained("MSD_vgg")
    with pytest.raises(UserError, match="not a musicnn model folder"):
        Musicnn.from_pretrained(str(tmp_path))
    (tmp_path / "config.json").write_text('{"name": "x", "architecture": "vgg", "tags": [], "network": {}}')
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(UserError, match="not a musicnn model folder.*SafetensorError"):
        Musicnn.from_pretrained(str(tmp_path))
