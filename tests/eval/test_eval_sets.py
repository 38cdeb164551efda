"""Embedding sets: the content-keyed cache, bad files excluded with a count and a reason, preprocessing."""

import shutil

import numpy as np
import pytest
import soundfile as sf
from eval_helpers import tone

from n2m import audio
from n2m.errors import UserError
from n2m.eval import embeddings
from n2m.eval.audio_sets import Preprocess, by_id, embed_files, list_audio


@pytest.fixture(scope="module")
def clap(clap_dir):
    return embeddings.load(f"clap:{clap_dir}")


def test_cache_hits_by_content_not_path(tmp_path, clap):
    sr = 16000
    a = tmp_path / "a.wav"
    audio.write(a, tone(2.0, sr, 440, seed=1), sr)
    cache = tmp_path / "cache"
    first = embed_files([a], clap, Preprocess(), cache, progress=False)
    assert first.cache_hits == 0 and len(first.ids) == 1
    # Same bytes under another name and directory: a hit, with identical embeddings.
    moved = tmp_path / "elsewhere" / "renamed.wav"
    moved.parent.mkdir()
    shutil.copy(a, moved)
    second = embed_files([moved], clap, Preprocess(), cache, progress=False)
    assert second.cache_hits == 1
    np.testing.assert_array_equal(second.frames[0], first.frames[0])
    # Changed content at the same path: a miss, and different embeddings.
    audio.write(a, tone(2.0, sr, 880, seed=2), sr)
    third = embed_files([a], clap, Preprocess(), cache, progress=False)
    assert third.cache_hits == 0
    assert not np.allclose(third.frames[0], first.frames[0])
    # Changed settings (a crop) on the same content: a miss too.
    fourth = embed_files([moved], clap, Preprocess(crop_s=1.0), cache, progress=False)
    assert fourth.cache_hits == 0
    # And re-runs reuse everything.
    again = embed_files([a, moved], clap, Preprocess(), cache, progress=False)
    assert again.cache_hits == 2


def test_bad_files_are_excluded_with_a_count_and_reason(tmp_path, clap):
    sr = 16000
    good = [tmp_path / f"ok{i}.wav" for i in range(3)]
    for i, path in enumerate(good):
        audio.write(path, tone(1.5, sr, 300 + 50 * i, seed=i), sr)
    (tmp_path / "empty.wav").write_bytes(b"")
    (tmp_path / "garbage.wav").write_bytes(b"RIFF\x00\x00not really a wave file" * 10)
    full = audio.encode(tone(2.0, sr, 440, seed=9), sr, "WAV")
    (tmp_path / "truncated.wav").write_bytes(full[: len(full) // 2])
    audio.write(tmp_path / "short.wav", tone(0.3, sr, 440, seed=3), sr)  # under clap_min_s (1 s)
    out = embed_files(list_audio(tmp_path), clap, Preprocess(), None, progress=False)
    summary = out.summary()
    assert sorted(out.ids) == ["ok0", "ok1", "ok2"]
    assert summary["excluded"] == 4 and summary["files"] == 7
    reasons = {f["path"].rsplit("/", 1)[-1]: f["reason"] for f in summary["excluded_files"]}
    assert reasons["empty.wav"] == "empty"
    assert reasons["short.wav"] == "too_short"
    assert reasons["truncated.wav"] == "truncated"
    assert reasons["garbage.wav"] in ("unsupported_format", "decode_error")
    assert all(np.isfinite(f).all() for f in out.frames)


def test_prefetch_threads_keep_order_and_results(tmp_path, clap):
    for i in range(7):
        audio.write(tmp_path / f"f{i}.wav", tone(1.2 + 0.1 * i, 16000, 300 + 40 * i, seed=i), 16000)
    (tmp_path / "bad.wav").write_bytes(b"junk")
    files = list_audio(tmp_path)
    inline = embed_files(files, clap, Preprocess(), None, progress=False, workers=0)
    threaded = embed_files(files, clap, Preprocess(), None, progress=False, workers=3)
    assert inline.ids == threaded.ids == [f"f{i}" for i in range(7)]
    assert [f.path for f in inline.failures] == [f.path for f in threaded.failures] == [str(tmp_path / "bad.wav")]
    for a, b in zip(inline.frames, threaded.frames):
        np.testing.assert_array_equal(a, b)


def test_vggish_too_short_is_excluded(tmp_path, vggish_weights):
    vgg = embeddings.load(f"vggish:{vggish_weights}")
    audio.write(tmp_path / "short.wav", tone(0.9, 16000, 440, seed=0), 16000)  # < 0.975 s: no full example
    audio.write(tmp_path / "ok.wav", tone(1.0, 16000, 440, seed=0), 16000)
    out = embed_files(list_audio(tmp_path), vgg, Preprocess(), None, progress=False)
    assert out.ids == ["ok"] and out.frames[0].shape == (1, 128)
    assert [f.reason for f in out.failures] == ["too_short"]


def test_preprocess_crops_the_middle_and_band_limits():
    sr = 48000
    ramp = np.arange(30 * sr, dtype=np.float32)[None] / (30 * sr)  # value = position in the clip
    decoded = audio.Decoded(ramp, sr, "test")
    out = Preprocess(crop_s=10.0).apply(decoded, sr)
    assert out.shape == (10 * sr,)
    assert out[0] == pytest.approx(10 / 30, abs=1e-6) and out[-1] == pytest.approx(20 / 30, abs=1e-4)
    # Band-limited through 16 kHz: a 12 kHz tone at 48 kHz vanishes, a 1 kHz tone stays.
    t = np.arange(sr) / sr
    mix = (np.sin(2 * np.pi * 1000 * t) + np.sin(2 * np.pi * 12000 * t)).astype(np.float32)[None]
    limited = Preprocess(band_rate=16000).apply(audio.Decoded(mix, sr, "test"), sr)
    spectrum = np.abs(np.fft.rfft(limited[sr // 4: 3 * sr // 4]))
    freqs = np.fft.rfftfreq(sr // 2, 1 / sr)
    assert spectrum[np.argmin(abs(freqs - 12000))] < 1e-3 * spectrum[np.argmin(abs(freqs - 1000))]


def test_listing_and_ids(tmp_path):
    (tmp_path / "d").mkdir()
    sf.write(tmp_path / "d" / "x.wav", np.zeros(100), 8000)
    sf.write(tmp_path / "y.flac", np.zeros(100), 8000)
    (tmp_path / "notes.md").write_text("not audio")
    (tmp_path / "list.txt").write_text("d/x.wav\ny.flac\n")
    assert [p.name for p in list_audio(tmp_path)] == ["x.wav", "y.flac"]
    assert [p.name for p in list_audio(str(tmp_path / "list.txt"))] == ["x.wav", "y.flac"]
    assert [p.name for p in list_audio(str(tmp_path / "**" / "*.wav"))] == ["x.wav"]
    with pytest.raises(UserError):
        list_audio(tmp_path / "nope")
    # Intermediate stage outputs that an n2m sample sidecar lists are not outputs to evaluate.
    sf.write(tmp_path / "y.16k.wav", np.zeros(100), 8000)
    (tmp_path / "y.json").write_text('{"id": "y", "intermediates": ["y.16k.wav"]}')
    assert [p.name for p in list_audio(tmp_path)] == ["x.wav", "y.flac"]
    sf.write(tmp_path / "d" / "y.wav", np.zeros(100), 8000)
    with pytest.raises(UserError, match="share the id"):
        by_id(list_audio(tmp_path))


def test_unknown_embedding_is_a_user_error():
    with pytest.raises(UserError, match="unknown embedding"):
        embeddings.load("trill:/x")
    with pytest.raises(UserError, match="needs a path: vggish:WEIGHTS"):
        embeddings.load("vggish")
    with pytest.raises(UserError, match="needs a path: clap:DIR"):
        embeddings.load("clap:")
    with pytest.raises(UserError, match="not found"):
        embeddings.load("vggish:/nonexistent.pth")
