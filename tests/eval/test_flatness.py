"""Spectral flatness (:mod:`n2m.eval.flatness`): white noise against its closed form, pure tones, silence, synthesised
music, the interval of a median, and the figures in ``n2m eval musiccaps`` reports and pages."""

import json
import math

import numpy as np
import pytest
from eval_helpers import tone
from scipy import special, stats

from n2m import audio, cli
from n2m.eval import report as reports
from n2m.eval import scoring
from n2m.eval.audio_sets import Preprocess
from n2m.eval.flatness import (
    EDGES,
    FLOOR_DB,
    FRAME,
    HOP,
    clip_flatness,
    frame_flatness,
    median_interval,
    nearer_noise,
    spectral_flatness,
)

GAMMA = 0.5772156649015329  # Euler-Mascheroni


def _noise_tolerance(frames: int) -> float:
    """Four standard errors of the median over ``frames`` frames of white noise's flatness (delta method). The bins of
    a periodic-Hann DFT of white noise are complex Gaussians with power correlation r = 4/9 (neighbours) and 1/36 (two
    apart); for such pairs Cov(log P_k, log P_l) = Li2(r) (Li2(1) = pi^2/6 = Var log Exp), Cov(P_k, P_l) = r mu^2 and
    Cov(log P_k, P_l) = r mu, so log SF_b = mean(log P) - log mean(P) over N_b bins has variance V / N_b with
    V = sum over lags of (Li2(r) + r - 2 r). Energy weights proportional to N_b give SF^2 V / 864 per frame. The median
    of n values has standard error sqrt(pi / 2) sigma / sqrt(n); half-overlapping frames count as frames / 2."""
    li2 = lambda z: special.spence(1.0 - z)  # noqa: E731 (scipy's spence(1 - z) is the dilogarithm Li2(z))
    lags = [1.0, 4 / 9, 4 / 9, 1 / 36, 1 / 36]
    variance = sum(li2(r) - r for r in lags) / (EDGES[-1] - EDGES[0])
    sigma = math.exp(-GAMMA) * math.sqrt(variance)
    return 4 * math.sqrt(math.pi / 2) * sigma / math.sqrt(frames / 2)


@pytest.mark.parametrize("rate", [16000, 24000, 44100])
def test_white_noise_matches_the_closed_form_exp_minus_gamma(rate):
    # E[log P_k] = log mu - gamma for an exponential bin power: the flatness tends to exp(-gamma) = 0.5615; the
    # arithmetic mean over N_b bins adds c / N_b to log SF_b (delta method, c = (1 + 2 * 4/9 + 2 * 1/36) / 2 = 35/36),
    # and energy weights (proportional to N_b) make that 5 c / 864 over the five octave bands.
    wave = np.random.default_rng(rate).standard_normal((1, 10 * rate)).astype(np.float32) * 0.1
    expected = math.exp(-GAMMA) * (1 + 5 * (35 / 36) / (EDGES[-1] - EDGES[0]))
    frames = 1 + (10 * 16000 - FRAME) // HOP
    value = spectral_flatness(wave, rate)
    assert value == pytest.approx(expected, abs=_noise_tolerance(frames))
    assert abs(value - math.exp(-GAMMA)) < 0.01  # a 24 or 44.1 kHz file too: the bands stop below the resampler's edge


@pytest.mark.parametrize("freq", [440.0, 1234.5, 3000.0])
def test_a_pure_tone_is_near_zero_and_its_level_follows_parseval(freq):
    t = np.arange(10 * 24000) / 24000
    wave = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    assert spectral_flatness(wave, 24000) < 0.01
    levels = frame_flatness(audio.resample(wave[None], 24000, 16000)[0])[2:-2, 1]
    assert levels == pytest.approx(10 * math.log10(0.5**2 / 2), abs=0.05)  # a sine's mean square is A^2 / 2


def test_silence_quiet_and_short_clips_are_not_measured():
    assert spectral_flatness(np.zeros(32000, np.float32), 16000) is None
    noise = np.random.default_rng(0).standard_normal(32000)
    # white noise in the bands (6,750 of 8,000 Hz) at -70 dBFS is skipped, at -50 dBFS measured
    in_band = math.sqrt(6750 / 8000)
    assert spectral_flatness(noise * 10 ** (-70 / 20) / in_band, 16000) is None
    assert spectral_flatness(noise * 10 ** (-50 / 20) / in_band, 16000) > 0.5
    assert frame_flatness(np.ones(FRAME - 1)).shape == (0, 2) and spectral_flatness(np.ones(FRAME - 1), 16000) is None
    assert clip_flatness(np.array([[0.5, FLOOR_DB - 1], [0.1, FLOOR_DB], [0.3, 0.0]])) == pytest.approx(0.2)


def test_synthesised_music_is_far_below_noise(tmp_path):
    from n2m.synth.corpus import CorpusConfig, generate, read_manifest
    from n2m.synth.styles import STYLES

    generate(CorpusConfig(seed=5, min_seconds=6.0, max_seconds=6.0), tmp_path, tracks=len(STYLES), progress=False)
    values = {}
    for row in read_manifest(tmp_path / "manifest.jsonl"):
        decoded = audio.decode(str(tmp_path / row["path"]))
        values[row["style"]] = spectral_flatness(decoded.samples, decoded.sample_rate)
    assert len(values) == len(STYLES)
    assert max(values.values()) < 0.2, values  # white noise: 0.56


def test_median_interval_is_the_binomial_order_statistic_interval():
    rng = np.random.default_rng(0)
    for n in range(1, 40):
        values = rng.permutation(np.arange(1.0, n + 1))  # x_(i) = i
        # the largest k with P(B <= k - 1) <= 2.5%, B ~ Binomial(n, 1/2), from scipy's binomial CDF
        ks = [k for k in range(1, n // 2 + 1) if 2 * stats.binom.cdf(k - 1, n, 0.5) <= 0.05]
        expected = (float(max(ks)), float(n + 1 - max(ks))) if ks else (None, None)
        assert median_interval(values) == expected, n
    assert median_interval(np.arange(1.0, 11.0)) == (2.0, 9.0)  # by hand: 2 * 11/1024 = 0.021 <= 0.05 < 2 * 56/1024
    assert median_interval(np.arange(1.0, 6.0)) == (None, None)  # 2 / 32 = 0.0625 > 0.05


def test_nearer_noise_is_the_midpoint_between_the_flattest_track_and_white_noise():
    middle = (0.099 + math.exp(-GAMMA)) / 2  # 0.330242...
    assert not nearer_noise(0.3302, 0.099) and nearer_noise(0.3303, 0.099)
    assert not nearer_noise(0.2, 0.099) and nearer_noise(0.565, 0.099)  # a trained demo's texture; step 0's noise
    assert nearer_noise(middle + 1e-9, 0.099) and not nearer_noise(middle - 1e-9, 0.099)


def _tone_references(tmp_path) -> tuple:
    """``(ref, gen)`` folders: three near-pure tones (300, 600, 900 Hz, 16 kHz, 3 s) as references, ``gen`` empty."""
    ref, gen = tmp_path / "ref", tmp_path / "gen"
    ref.mkdir()
    gen.mkdir()
    for i in range(3):
        audio.write(ref / f"t{i}.wav", tone(3.0, 16000, 300 * (i + 1), seed=i, noise=0.002), 16000)
    return ref, gen


def test_noisier_than_every_reference_but_nearer_music_warns_without_the_alarm(tmp_path):
    ref, gen = _tone_references(tmp_path)
    for i in range(3):
        audio.write(gen / f"t{i}.wav", tone(3.0, 16000, 300 * (i + 1), seed=10 + i, noise=0.15), 16000)
    refs, gens = sorted(ref.iterdir()), sorted(gen.iterdir())
    report = reports.base_report("musiccaps", "texture", {})
    report.update(sets={}, warnings=[], samples=[])
    scoring.add_flatness(report, refs, gens, Preprocess(10.0, 16000), None)
    median = float(np.median([spectral_flatness(audio.decode(str(p)).samples, 16000) for p in gens]))
    flattest = max(spectral_flatness(audio.decode(str(p)).samples, 16000) for p in refs)
    assert flattest < median < (flattest + math.exp(-GAMMA)) / 2  # the case under test: between the two
    assert report["flatness"]["noise_like"] is False
    assert any("noisier than every reference, though nearer music than white noise" in w for w in report["warnings"])
    assert not any("sound like noise" in w for w in report["warnings"])
    assert "class=alarm" not in reports.render_html(report)


def test_add_flatness_silence_noise_cache_and_page(tmp_path):
    ref, gen = _tone_references(tmp_path)
    rng = np.random.default_rng(1)
    audio.write(gen / "t0.wav", (0.1 * rng.standard_normal((1, 3 * 24000))).astype(np.float32), 24000)
    audio.write(gen / "t1.wav", np.zeros((1, 3 * 24000), np.float32), 24000)
    refs, gens = sorted(ref.iterdir()), sorted(gen.iterdir())
    expected = spectral_flatness(audio.decode(str(gens[0])).samples, 24000)
    tones = [spectral_flatness(audio.decode(str(p)).samples, 16000) for p in refs]

    def measured() -> dict:
        report = reports.base_report("musiccaps", "noise", {})
        report.update(sets={}, warnings=[], samples=[{"id": p.stem, "generated": str(p), "reference": str(r)}
                                                     for p, r in zip(gens, refs)])
        scoring.add_flatness(report, refs, gens, Preprocess(10.0, 16000), tmp_path / "cache")
        return report

    report = measured()
    rows = report["metrics"]
    assert rows["spectral_flatness"]["value"] == pytest.approx(expected, abs=1e-5) and rows["spectral_flatness"]["n"] == 1
    assert rows["spectral_flatness"]["low"] is None  # one clip: no interval
    assert rows["spectral_flatness_reference"]["value"] == pytest.approx(float(np.median(tones)), abs=1e-5)
    assert rows["spectral_flatness_reference_max"]["value"] == pytest.approx(max(tones), abs=1e-5)
    assert report["flatness"]["generated"]["silent"] == ["t1"] and report["flatness"]["noise_like"] is True
    assert any("1 generated clips have no frame above -60 dBFS" in w for w in report["warnings"])
    assert any("sound like noise" in w for w in report["warnings"])
    samples = {s["id"]: s for s in report["samples"]}
    assert samples["t0"]["generated_flatness"] == pytest.approx(expected, abs=1e-4)
    assert "generated_flatness" not in samples["t1"] and "reference_flatness" in samples["t1"]
    page = reports.render_html(report)
    assert "class=alarm>The generated clips sound like noise" in page and "spectral flatness 0.5" in page
    assert page.index("class=alarm") < page.index("<h2>Metrics")

    again = measured()  # every clip's frames now come from the cache
    assert again["sets"]["generated (flatness)"]["cache_hits"] == 2
    assert again["metrics"] == rows

    report = reports.base_report("musiccaps", "silent", {})
    report.update(sets={}, warnings=[])
    scoring.add_flatness(report, refs, gens[1:], Preprocess(10.0, 16000), None)
    assert report["metrics"]["spectral_flatness"]["value"] is None and report["flatness"]["noise_like"] is None
    assert "class=alarm" not in reports.render_html(report)


def test_musiccaps_report_carries_flatness(tmp_path, audio_sets, vggish_weights):
    out = tmp_path / "mc"
    code = cli.main(["eval", "musiccaps", "--captions", str(audio_sets["prompts"]), "--id-column", "id",
                     "--caption-column", "text", "--reference-audio", str(audio_sets["reference"]), "--generated",
                     str(audio_sets["generated"]), "--vggish", vggish_weights, "--bootstrap", "0", "--no-cache",
                     "--out", str(out)])
    assert code == 0
    rep = json.loads((out / "report.json").read_text())
    independent = {}
    for side in ("generated", "reference"):
        for path in sorted(audio_sets[side].iterdir()):
            if path.suffix in (".wav", ".flac"):
                decoded = audio.decode(str(path))
                independent.setdefault(side, {})[path.stem] = spectral_flatness(decoded.samples, decoded.sample_rate)
    gen, ref = independent["generated"], independent["reference"]
    metrics = rep["metrics"]
    assert metrics["spectral_flatness"]["value"] == pytest.approx(np.median(list(gen.values())), abs=1e-5)
    assert metrics["spectral_flatness"]["n"] == len(gen) == 6
    assert (metrics["spectral_flatness"]["low"], metrics["spectral_flatness"]["high"]) == pytest.approx(
        median_interval(np.array(list(gen.values()))), abs=1e-5)
    assert metrics["spectral_flatness_reference"]["value"] == pytest.approx(np.median(list(ref.values())), abs=1e-5)
    assert metrics["spectral_flatness_reference_max"]["value"] == pytest.approx(max(ref.values()), abs=1e-5)
    assert rep["flatness"]["generated"]["per_item"] == pytest.approx(gen, abs=1e-5)
    assert all(s["generated_flatness"] == pytest.approx(gen[s["id"]], abs=1e-4) for s in rep["samples"])
    assert "spectral flatness" in (out / "report.html").read_text()
