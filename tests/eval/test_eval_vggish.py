"""VGGish with random weights: the log-mel frontend against librosa/numpy, both framings, shapes, loading and PCA."""

import math

import librosa
import numpy as np
import pytest
import scipy.signal
import torch

from n2m.audio import AudioError
from n2m.eval import vggish

SR = vggish.SAMPLE_RATE


@pytest.fixture(scope="module")
def wave() -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(3.3 * SR)) / SR
    return (0.4 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.normal(size=t.size)).astype(np.float32)


def _reference_mel_matrix() -> np.ndarray:
    """AudioSet's mel weights written out with explicit loops over bands and bins, on librosa's HTK mel scale."""
    nyquist = SR / 2
    bins_hz = np.linspace(0, nyquist, 257)
    bins_mel = librosa.hz_to_mel(bins_hz, htk=True)
    lo, hi = librosa.hz_to_mel(125.0, htk=True), librosa.hz_to_mel(7500.0, htk=True)
    edges = [lo + (hi - lo) * i / 65 for i in range(66)]
    out = np.zeros((257, 64))
    for band in range(64):
        left, centre, right = edges[band], edges[band + 1], edges[band + 2]
        for k in range(1, 257):  # bin 0 (DC) stays zero
            m = bins_mel[k]
            if left < m <= centre:
                out[k, band] = (m - left) / (centre - left)
            elif centre < m < right:
                out[k, band] = (right - m) / (right - centre)
    return out


def _reference_logmel(y: np.ndarray) -> np.ndarray:
    """librosa STFT (periodic Hann 400 inside a 512 FFT, no centring) aligned to AudioSet's frames, numpy mel, log."""
    # librosa centres the 400-sample window inside the 512-point frame (offset 56): shift the signal to match.
    padded = np.concatenate([np.zeros(56, np.float32), y, np.zeros(56, np.float32)])
    window = scipy.signal.get_window("hann", 400, fftbins=True)
    spec = np.abs(librosa.stft(padded, n_fft=512, hop_length=160, win_length=400, window=window, center=False))
    frames = 1 + (len(y) - 400) // 160
    return np.log(spec[:, :frames].T @ _reference_mel_matrix() + 0.01)


def test_mel_matrix_matches_reference():
    np.testing.assert_allclose(vggish.mel_matrix(), _reference_mel_matrix(), atol=1e-9)


def test_logmel_matches_librosa(wave):
    ours = vggish.LogMel()(torch.from_numpy(wave)).double().numpy()
    ref = _reference_logmel(wave)
    assert ours.shape == ref.shape == (1 + (len(wave) - 400) // 160, 64)
    np.testing.assert_allclose(ours, ref, atol=2e-4)


@pytest.fixture(scope="module")
def random_weights(vggish_weights) -> str:
    return vggish_weights


def test_state_dict_layout_is_torchvggish(random_weights):
    keys = set(torch.load(random_weights, weights_only=True))
    expected = {f"features.{i}.{p}" for i in (0, 3, 6, 8, 11, 13) for p in ("weight", "bias")}
    expected |= {f"embeddings.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")}
    assert expected <= keys


def test_torchvggish_framing_shapes(random_weights, wave):
    model = vggish.VGGishEmbedder.from_files(random_weights, vggish.VGGishSettings("torchvggish"))
    out = model.embed(wave)
    frames = 1 + (len(wave) - 400) // 160
    assert out.shape == (frames // 96, 128)  # 3.3 s -> 328 frames -> 3 examples
    assert out.dtype == np.float32 and np.isfinite(out).all() and (out >= 0).all()  # final ReLU kept
    # The examples are consecutive non-overlapping 96-frame blocks of the clip's log-mel.
    examples = model.examples(torch.from_numpy(wave))
    np.testing.assert_allclose(examples[1].numpy(), _reference_logmel(wave)[96:192], atol=2e-4)


def test_google_framing_windows_and_normalisation(random_weights, wave):
    model = vggish.VGGishEmbedder.from_files(random_weights, vggish.VGGishSettings("google"))
    windows = 1 + (len(wave) - SR) // (SR // 2)
    assert model.embed(wave).shape == (windows, 128)
    examples = model.examples(torch.from_numpy(wave))
    # Window 2 starts at 1.0 s; samples scaled by 1 / max(0.1, peak of the whole clip).
    scaled = wave / max(0.1, float(np.abs(wave).max()))
    np.testing.assert_allclose(examples[2].numpy(), _reference_logmel(scaled[SR:2 * SR])[:96], atol=2e-4)
    quiet = (wave * 0.01).astype(np.float32)  # peak below 0.1: divided by 0.1, not by its peak
    q = model.examples(torch.from_numpy(quiet))[0].numpy()
    np.testing.assert_allclose(q, _reference_logmel(quiet[:SR] / 0.1)[:96], atol=2e-4)


def test_too_short_clip_is_a_typed_error(random_weights):
    model = vggish.VGGishEmbedder.from_files(random_weights, vggish.VGGishSettings("torchvggish"))
    assert model.min_seconds == pytest.approx(0.975)
    with pytest.raises(AudioError) as err:
        model.embed(np.zeros(int(0.9 * SR), np.float32))
    assert err.value.reason == "too_short"


def test_pca_postprocessing_matches_audioset_formula(random_weights, wave):
    raw = vggish.VGGishEmbedder.from_files(random_weights, vggish.VGGishSettings(postprocess="none")).embed(wave)
    state = torch.load(random_weights, weights_only=True)
    matrix, means = state["pproc.pca_eigen_vectors"].double().numpy(), state["pproc.pca_means"].double().numpy()
    pca = (matrix @ (raw.T.astype(np.float64) - means)).T
    quantised = np.round((np.clip(pca, -2.0, 2.0) + 2.0) * (255.0 / 4.0))
    got_pca = vggish.VGGishEmbedder.from_files(random_weights, vggish.VGGishSettings(postprocess="pca")).embed(wave)
    got_q = vggish.VGGishEmbedder.from_files(random_weights,
                                             vggish.VGGishSettings(postprocess="pca_quantized")).embed(wave)
    np.testing.assert_allclose(got_pca, pca, atol=1e-4)
    assert np.abs(got_q - quantised).max() <= 1.0  # rounding at .5 boundaries may differ by one step
    assert np.mean(got_q == quantised) > 0.99


def test_flattening_follows_tensorflow_order():
    # The first linear layer sees features in [N, H, W, C] order (TF), as torchvggish transposes before flattening.
    torch.manual_seed(1)
    net = vggish.VGGish().eval()
    x = torch.randn(2, 96, 64)
    feats = net.features(x[:, None])
    expected = net.embeddings(torch.transpose(torch.transpose(feats, 1, 3), 1, 2).reshape(2, -1))
    torch.testing.assert_close(net(x), expected)
    assert math.prod(feats.shape[1:]) == 512 * 4 * 6
