"""The synthetic corpus: determinism, manifest, formats and durations, and its ground truth checked from the audio by
independent methods (librosa's beat tracker for tempo, Krumhansl-Schmuckler key profiles on chroma for the key, MFCC
distances for the timbres, scipy's lfilter for the Karplus-Strong string)."""

from __future__ import annotations

import itertools
import json
import math

import librosa
import numpy as np
import pytest
from scipy import signal

from n2m import audio
from n2m.cli import main
from n2m.synth import dsp, harmony
from n2m.synth.compose import Note, TrackSpec, compose, plan_form
from n2m.synth.corpus import (
    CorpusConfig,
    chosen_for_holdout,
    encode_track,
    generate,
    ogg_crc,
    read_manifest,
    stable_ogg,
)
from n2m.synth.instruments import INSTRUMENTS, MELODIC
from n2m.synth.render import render_part
from n2m.synth.styles import MOODS, STYLES

SR = dsp.SAMPLE_RATE
SHORT = CorpusConfig(seed=1, min_seconds=5.0, max_seconds=8.0, holdout=0.25)


def _files(folder) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def short_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("short")
    generate(SHORT, out, tracks=4, progress=False)
    return out


@pytest.fixture(scope="module")
def styles_corpus(tmp_path_factory):
    """Seven 20 s tracks: with seed 0 the first deck deals every style once."""
    out = tmp_path_factory.mktemp("styles")
    generate(CorpusConfig(seed=0, min_seconds=20.0, max_seconds=20.0), out, tracks=len(STYLES), progress=False)
    rows = list(read_manifest(out / "manifest.jsonl"))
    assert sorted(r["style"] for r in rows) == sorted(s.label for s in STYLES.values())
    return out, rows


# ---------------------------------------------------------------------------------------------------------------------
# Determinism


def test_same_seed_gives_identical_bytes_whatever_the_workers(short_corpus, tmp_path):
    generate(SHORT, tmp_path, tracks=4, workers=2, progress=False)
    assert _files(tmp_path) == _files(short_corpus)


def test_tracks_do_not_depend_on_corpus_size_and_seed_matters(short_corpus, tmp_path):
    fewer, other = tmp_path / "fewer", tmp_path / "other"
    generate(SHORT, fewer, tracks=2, progress=False)
    first = _files(short_corpus)
    for name, data in _files(fewer).items():
        if name.startswith("audio/"):
            assert first[name] == data
    lines = (short_corpus / "manifest.jsonl").read_text().splitlines()
    assert (fewer / "manifest.jsonl").read_text().splitlines() == lines[:2]
    generate(CorpusConfig(seed=2, min_seconds=5.0, max_seconds=8.0), other, tracks=2, progress=False)
    a = audio.decode(short_corpus / json.loads(lines[0])["path"]).samples
    b = audio.decode(other / next(read_manifest(other / "manifest.jsonl"))["path"]).samples
    assert a.shape != b.shape or not np.allclose(a, b)


@pytest.mark.parametrize("fmt", ["ogg", "mp3"])
def test_long_tracks_encode_deterministically(fmt):
    """150 s in one libvorbis call overflows its stack (a crash, not an exception): the corpus writes Ogg in blocks."""
    samples = (0.1 * np.random.default_rng(0).standard_normal((1, 150 * SR))).astype(np.float32)
    data = encode_track(samples, fmt, serial=7)
    assert data == encode_track(samples, fmt, serial=7)
    assert abs(audio.decode(data).samples.shape[1] - samples.shape[1]) < 0.01 * SR * 150


def test_ogg_serial_is_rewritten_with_valid_checksums():
    tone = (0.3 * np.sin(np.arange(SR) * 0.05)).astype(np.float32)[None]
    data = audio.encode(tone, SR, "OGG")
    assert stable_ogg(data, int.from_bytes(data[14:18], "little")) == data  # our CRC reproduces libvorbis/libogg's
    fixed = stable_ogg(data, 1234)
    assert fixed != data and int.from_bytes(fixed[14:18], "little") == 1234
    assert audio.decode(fixed).samples.shape == audio.decode(data).samples.shape
    assert ogg_crc(b"OggS") != ogg_crc(b"OggT")


# ---------------------------------------------------------------------------------------------------------------------
# Manifest, formats, durations


def test_manifest_fields_formats_and_durations(short_corpus):
    rows = list(read_manifest(short_corpus / "manifest.jsonl"))
    assert len(rows) == 4 and len({r["track_id"] for r in rows}) == 4
    assert {r["format"] for r in rows} == {"wav", "flac", "ogg", "mp3"}
    assert sum(r["holdout"] for r in rows) == 1
    for row in rows:
        assert not row["path"].startswith("/")
        decoded = audio.decode(short_corpus / row["path"])
        assert decoded.sample_rate == row["sample_rate"] == SR and decoded.samples.shape[0] == 1
        assert SHORT.min_seconds <= row["duration_s"] <= SHORT.max_seconds
        assert abs(decoded.duration_s - row["duration_s"]) < 0.1  # mp3/ogg frames may pad a little
        assert 60 <= row["bpm"] <= 180 and row["mode"] in ("major", "minor") and row["key"] in harmony.NOTE_NAMES
        assert row["mood"] in MOODS and row["style"] in {s.label for s in STYLES.values()}
        assert isinstance(row["title"], str) and row["title"] and isinstance(row["artist"], str) and row["artist"]
        assert row["instruments"][-1] == "drums" and len(row["instruments"]) == 4
        caption = row["caption"]
        for word in (row["style"], row["mood"], f"{row['key']} {row['mode']}", f"{row['bpm']} BPM", *row["instruments"][:3]):
            assert word in caption, (word, caption)
        assert set(row["tags"]) >= {row["style"], row["mood"], *row["instruments"]}
        assert -40.0 < audio.rms_db(decoded.samples) < -6.0 and audio.peak_db(decoded.samples) <= 0.0


def test_default_durations_span_35_to_150_seconds():
    from n2m.synth.corpus import choose_spec

    durations = [choose_spec(CorpusConfig(seed=3), i).duration_s for i in range(200)]
    assert 35.0 <= min(durations) < 50.0 and 135.0 < max(durations) <= 150.0
    specs = [choose_spec(CorpusConfig(seed=3), i) for i in range(42)]
    assert {s.style for s in specs} == set(STYLES) and {s.lead for s in specs} == set(MELODIC)
    assert {s.mode for s in specs} == {"major", "minor"}
    assert all(STYLES[s.style].bpm[0] <= s.bpm <= STYLES[s.style].bpm[1] for s in specs)


def test_holdout_is_exact_and_prefix_stable():
    for fraction in (0.1, 0.2, 0.25, 1 / 3):
        flags = [chosen_for_holdout(i, fraction) for i in range(300)]
        for n in (7, 50, 300):
            assert sum(flags[:n]) == math.floor(n * fraction + 1e-9)
    assert not any(chosen_for_holdout(i, 0.0) for i in range(100))


def test_rendered_length_is_exact_and_form_fills_the_bars():
    spec = TrackSpec("funk", "groovy", 2, "major", 104, 6.5, "organ", "piano", "electric_bass")
    rng = np.random.default_rng(0)
    from n2m.synth.render import render

    assert render(compose(spec, rng), spec, rng).shape == (1, round(6.5 * SR))
    for n_bars in (2, 5, 11, 12, 39, 40, 75):
        assert sum(bars for _, bars in plan_form(n_bars)) == n_bars


# ---------------------------------------------------------------------------------------------------------------------
# Ground truth from the audio


def test_librosa_beat_tracker_recovers_the_tempo(styles_corpus):
    out, rows = styles_corpus
    hits = []
    for row in rows:
        decoded = audio.decode(out / row["path"])
        y = audio.resample(decoded.samples, decoded.sample_rate, 22050)[0]
        tempo = float(np.atleast_1d(librosa.beat.beat_track(y=y, sr=22050)[0])[0])
        ratios = (1.0, 0.5, 2.0) + ((2 / 3, 1.5) if row["meter"] == "3/4" else ())
        hits.append(any(abs(tempo / (row["bpm"] * r) - 1.0) < 0.08 for r in ratios))
    assert sum(hits) >= 0.7 * len(rows), list(zip([r["bpm"] for r in rows], hits))


_MAJOR_PROFILE = np.array([6.35, 2.23, 3.48, 2.33, 4.38, 4.09, 2.52, 5.19, 2.39, 3.66, 2.29, 2.88])  # Krumhansl-Kessler
_MINOR_PROFILE = np.array([6.33, 2.68, 3.52, 5.38, 2.60, 3.53, 2.54, 4.75, 3.98, 2.69, 3.34, 3.17])


def test_key_and_mode_recovered_from_chroma(styles_corpus):
    out, rows = styles_corpus
    correct = 0
    for row in rows:
        decoded = audio.decode(out / row["path"])
        chroma = librosa.feature.chroma_cqt(y=audio.resample(decoded.samples, SR, 22050)[0], sr=22050).mean(axis=1)
        scores = {
            (harmony.NOTE_NAMES[k], mode): np.corrcoef(chroma, np.roll(profile, k))[0, 1]
            for k in range(12)
            for profile, mode in ((_MAJOR_PROFILE, "major"), (_MINOR_PROFILE, "minor"))
        }
        correct += max(scores, key=scores.get) == (row["key"], row["mode"])
    assert correct >= 0.7 * len(rows)


_PHRASE = [(60, 0.0, 0.4), (64, 0.5, 0.4), (67, 1.0, 0.4), (72, 1.5, 1.0), (67, 2.5, 0.4), (64, 3.0, 0.9)]


def _timbre(name: str, seed: int) -> np.ndarray:
    notes = [Note(start, dur, pitch, 0.8) for pitch, start, dur in _PHRASE]
    y = render_part(notes, name, 5 * SR, 0.0, np.random.default_rng(seed))
    mfcc = librosa.feature.mfcc(y=y, sr=SR, n_mfcc=20)[1:]  # without c0 (loudness)
    return np.concatenate([mfcc.mean(axis=1), mfcc.std(axis=1)])


def test_timbres_playing_the_same_notes_differ_more_than_renders_of_one_timbre():
    features = {(name, seed): _timbre(name, seed) for name in MELODIC for seed in (1, 2)}
    within = max(np.linalg.norm(features[(n, 1)] - features[(n, 2)]) for n in MELODIC)
    between = min(np.linalg.norm(features[(a, 1)] - features[(b, 2)]) for a, b in itertools.permutations(MELODIC, 2))
    assert between > 2.0 * within
    notes = [Note(0.0, 1.0, 60, 0.8)]
    piano, organ = (render_part(notes, n, SR * 2, 0.0, np.random.default_rng(0)) for n in ("piano", "organ"))
    assert np.abs(piano[SR : SR + 4000]).max() < 0.3 * np.abs(piano[:4000]).max()  # piano decays ...
    assert np.abs(organ[SR // 2 : SR // 2 + 4000]).max() > 0.7 * np.abs(organ[:4000]).max()  # ... an organ holds


@pytest.mark.parametrize("freq", [55.0, 220.0, 987.8])
def test_karplus_strong_matches_lfilter_and_is_in_tune(freq):
    rng = np.random.default_rng(0)
    excitation = rng.standard_normal(int(SR / freq))
    n = SR
    fast = dsp.karplus_strong(excitation, freq, 2.0, n)
    b, a = dsp.karplus_strong_filter(freq, 2.0)
    x = np.zeros(n)
    x[: len(excitation)] = excitation
    reference = signal.lfilter(b, a, x)
    assert np.max(np.abs(fast - reference)) < 1e-4 * np.max(np.abs(reference))
    spectrum = np.abs(np.fft.rfft(reference[SR // 4 :] * np.hanning(n - SR // 4), 8 * n))
    bins = np.fft.rfftfreq(8 * n, 1 / SR)
    near = (bins > 0.9 * freq) & (bins < 1.1 * freq)
    assert abs(bins[near][np.argmax(spectrum[near])] / freq - 1.0) < 0.003  # within 5 cents


def test_diatonic_chords_and_voicings():
    assert harmony.diatonic_chord(0, "major", 0, "triad").tones == (0, 4, 7)  # C E G
    assert harmony.diatonic_chord(9, "minor", 4, "triad", leading_tone=True).tones == (4, 8, 11)  # E G# B in A minor
    assert harmony.diatonic_chord(2, "major", 1, "seventh").tones == (4, 7, 11, 2)  # Em7 in D major
    chord = harmony.diatonic_chord(7, "major", 3, "triad")
    pitches = harmony.voice(chord, [60, 64, 67])
    assert {p % 12 for p in pitches} == set(chord.tones) and all(52 <= p <= 76 for p in pitches)
    for name, inst in INSTRUMENTS.items():
        assert inst.label in inst.phrases[0], name


# ---------------------------------------------------------------------------------------------------------------------
# CLI


def test_cli_writes_a_corpus(tmp_path, capsys):
    out = tmp_path / "corpus"
    code = main(["synth", "--out", str(out), "--tracks", "2", "--seed", "4", "--min-seconds", "3", "--max-seconds", "4",
                 "--holdout", "0.5"])
    assert code == 0
    rows = list(read_manifest(out / "manifest.jsonl"))
    assert len(rows) == 2 and sum(r["holdout"] for r in rows) == 1
    assert all((out / r["path"]).is_file() for r in rows)
    meta = json.loads((out / "synth.json").read_text())
    assert meta["summary"]["tracks"] == 2 and meta["config"]["seed"] == 4 and "numpy" in meta["versions"]
    assert "2 tracks" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags, word",
    [(["--tracks", "0"], "--tracks"), (["--min-seconds", "50", "--max-seconds", "40"], "--min-seconds"),
     (["--holdout", "1.5"], "--holdout"), (["--formats", "aiff"], "--formats")],
)
def test_cli_bad_arguments_give_one_line_and_nonzero_exit(tmp_path, capsys, flags, word):
    code = main(["synth", "--out", str(tmp_path / "x"), *flags])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and word in err
    assert not (tmp_path / "x").exists()


def test_cli_negative_seed_is_a_one_line_parse_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["synth", "--out", str(tmp_path / "x"), "--seed", "-1"])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and "--seed" in err and "'-1'" in err
    assert not (tmp_path / "x").exists()


def test_cli_takes_options_from_yaml_and_requires_out(tmp_path, capsys):
    config = tmp_path / "synth.yaml"
    config.write_text(f"out: {tmp_path / 'from_yaml'}\ntracks: 1\nmin-seconds: 2\nmax-seconds: 2\nformats: flac\n")
    assert main(["synth", "--config", str(config), "--seed", "7"]) == 0
    row = next(read_manifest(tmp_path / "from_yaml" / "manifest.jsonl"))
    assert row["format"] == "flac" and row["duration_s"] == 2.0 and row["track_id"].startswith("synth7-")
    capsys.readouterr()
    assert main(["synth", "--tracks", "1"]) == 2
    assert "--out" in capsys.readouterr().err


def test_cli_dry_run_writes_nothing(tmp_path, capsys):
    assert main(["synth", "--out", str(tmp_path / "y"), "--tracks", "3", "--dry-run"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert len(plan["tracks"]) == 3 and not (tmp_path / "y").exists()
