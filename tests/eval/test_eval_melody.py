"""``n2m eval melody``: melody agreement on sine melodies whose equal notes are counted by hand, a lossy re-encoding and
a semitone transposition, the paired-vs-shuffled gain on unrelated clips, pairing by content hash, and the real CLI on
clips and sidecars written by ``n2m sample``'s own writer."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from n2m import audio
from n2m.cli import main
from n2m.eval.melody_agreement import CHANCE, MelodyFrames, agreement_counts, pair_sources, pitch_classes, score

SR = 24_000
NOTE_S = 0.5  # 5 frames a note at the default 10 frames/s: note boundaries fall on frame boundaries
SCALE = [60, 62, 64, 65, 67, 69, 71, 72]  # C major, MIDI numbers


def notes(midis: list[int], octave: int = 0, overtone: float = 0.0, sr: int = SR) -> np.ndarray:
    """Mono ``[1, T]``: each MIDI note for :data:`NOTE_S` s as a sine (plus ``overtone`` times its octave)."""
    t = np.arange(int(NOTE_S * sr)) / sr
    parts = []
    for m in midis:
        f = 440.0 * 2.0 ** ((m + 12 * octave - 69) / 12)
        parts.append(0.3 * np.sin(2 * np.pi * f * t) + overtone * 0.3 * np.sin(2 * np.pi * 2 * f * t))
    return np.concatenate(parts).astype(np.float32)[None]


def classes(wave: np.ndarray, sr: int = SR) -> np.ndarray:
    """Pitch class per 0.1 s frame ``[F]`` as the job computes it (16 kHz, n2m.melody)."""
    frames = MelodyFrames()
    return pitch_classes(frames.embed(audio.resample(audio.downmix(wave), sr, frames.sample_rate)[0]))


def random_melody(seed: int, count: int = 8) -> list[int]:
    return [int(m) for m in np.random.default_rng(seed).integers(55, 80, size=count)]


# ---------------------------------------------------------------------------------------------------------------------
# Agreement of one clip with one source


def test_agreement_is_the_hand_counted_share_of_equal_notes():
    """5 of the 8 notes equal (played an octave up with an overtone: the judge is octave- and timbre-free), and two
    more notes in the clip past the end of the source, which the overlap leaves out: 5 x 5 of 8 x 5 frames."""
    source = SCALE
    clip = [60, 62, 63, 65, 66, 69, 70, 72, 61, 61]  # E -> Eb, G -> F#, B -> Bb; then two notes the source lacks
    equal = sum(a == b for a, b in zip(source, clip))
    assert equal == 5
    assert agreement_counts(classes(notes(clip, octave=1, overtone=0.5)), classes(notes(source))) == (equal * 5, 40)


@pytest.mark.parametrize("fmt", ["OGG", "MP3"])
def test_a_clip_agrees_with_itself_reencoded(fmt):
    rng = np.random.default_rng(4)
    original = notes(random_melody(3, 16), overtone=0.4) + 0.01 * rng.standard_normal((1, 16 * int(NOTE_S * SR)))
    decoded = audio.decode(audio.encode(original.astype(np.float32), SR, fmt))
    equal, voiced = agreement_counts(classes(decoded.samples, decoded.sample_rate), classes(original))
    assert voiced >= 78 and equal / voiced >= 0.97


def test_a_semitone_transposition_has_near_zero_agreement():
    melody = random_melody(5, 16)
    equal, voiced = agreement_counts(classes(notes([m + 1 for m in melody])), classes(notes(melody)))
    assert voiced == 80 and equal / voiced <= 0.03


# ---------------------------------------------------------------------------------------------------------------------
# Paired vs shuffled


def test_unrelated_clips_give_a_gain_interval_containing_zero():
    """Twelve clips, each paired with a source whose melody was drawn independently of it: paired and shuffled both
    near chance, the gain's interval holds 0."""
    clips = {f"c{i:02d}": classes(notes(random_melody(100 + i, 12))) for i in range(12)}
    sources = {f"s{i:02d}": classes(notes(random_melody(200 + i, 12))) for i in range(12)}
    result = score(clips, sources, {f"c{i:02d}": f"s{i:02d}" for i in range(12)})
    rows = result.rows(reps=2000, seed=0)
    gain = rows["melody_agreement_gain"]
    assert gain["n"] == 12 and gain["low"] < 0 < gain["high"]
    assert abs(rows["melody_agreement"]["value"] - CHANCE) < 0.06
    assert rows["melody_agreement_chance"]["value"] == pytest.approx(1 / 12)


def test_shuffled_is_the_mean_over_the_other_distinct_sources():
    """Two clips follow source a, one source b: a clip of a is shuffled against b only (not against a's copy)."""
    a, b = classes(notes(SCALE)), classes(notes(SCALE[::-1]))
    result = score({"x": a, "y": a.copy(), "z": b}, {"a": a, "b": b}, {"x": "a", "y": "a", "z": "b"})
    by_hand = agreement_counts(a, b)
    assert list(result.paired) == [1.0, 1.0, 1.0]
    assert result.shuffled == pytest.approx([by_hand[0] / by_hand[1]] * 3)


# ---------------------------------------------------------------------------------------------------------------------
# Pairing and the CLI, on clips and sidecars as n2m sample writes them


def write_clip(out: Path, clip_id: str, wave: np.ndarray, melody: Path | None) -> Path:
    """``out/ID.wav`` + ``out/ID.json`` through ``n2m sample``'s writer, the melody entry as the sampler describes it."""
    from n2m.training.conditioning import read_audio_file
    from n2m.training.sample_files import write_result
    from n2m.training.sampling import Prompt, Result

    meta = {"seconds": wave.shape[1] / SR, "stages": {}, "settings": {}, "timing": {}, "versions": {},
            "melody": read_audio_file(str(melody), "--melody").describe() if melody else None}
    result = Result(clip_id, Prompt(clip_id, f"a tune {clip_id}"), 0, 0, wave[0], SR, metadata=meta)
    write_result(out, result, {"seed": 0, "cascade": "waveform"})
    return out / f"{clip_id}.wav"


@pytest.fixture(scope="module")
def sampled(tmp_path_factory) -> dict[str, Path]:
    """Six sources with random melodies; clips ``follow0..5`` play them an octave up (one note of eight changed),
    ``moved`` (with an overtone) follows a source since moved to ``elsewhere/``, ``gone`` one since deleted, ``changed`` one since
    overwritten, and ``plain`` was sampled without a melody."""
    root = tmp_path_factory.mktemp("melody")
    src, gen, elsewhere = root / "sources", root / "generated", root / "elsewhere"
    for folder in (src, gen, elsewhere):
        folder.mkdir()
    melodies = {}
    for i in range(8):
        melodies[i] = random_melody(300 + i)
        audio.write(src / f"tune{i}.wav", notes(melodies[i], sr=22050), 22050)
    for i in range(6):
        played = [m + 1 if k == 3 else m for k, m in enumerate(melodies[i])]
        write_clip(gen, f"follow{i}", notes(played, octave=1, overtone=0.3), src / f"tune{i}.wav")
    write_clip(gen, "moved", notes(melodies[6], overtone=0.5), src / "tune6.wav")
    write_clip(gen, "gone", notes(melodies[7]), src / "tune7.wav")
    write_clip(gen, "changed", notes(melodies[0]), src / "tune0.wav")
    write_clip(gen, "plain", notes(SCALE), None)
    shutil.move(src / "tune6.wav", elsewhere / "renamed.wav")
    audio.write(elsewhere / "a_decoy.wav", notes(SCALE[::-1]), 22050)  # files listed before and after it
    audio.write(elsewhere / "z_decoy.wav", notes(SCALE[2:]), 22050)
    (src / "tune7.wav").unlink()
    changed = root / "changed.wav"
    audio.write(changed, notes(SCALE), 22050)
    meta = json.loads((gen / "changed.json").read_text())
    meta["melody"]["path"] = str(changed)
    (gen / "changed.json").write_text(json.dumps(meta))
    audio.write(changed, notes(SCALE[::-1]), 22050)  # the recorded file now holds other content
    return {"root": root, "sources": src, "generated": gen, "elsewhere": elsewhere}


def test_pairing_finds_moved_sources_by_hash_and_records_why_others_are_missing(sampled):
    gen = sorted(sampled["generated"].glob("*.wav"))
    pairs = {p.id: p for p in pair_sources(gen, str(sampled["elsewhere"]))}
    assert pairs["follow2"].source == sampled["sources"] / "tune2.wav" and pairs["follow2"].located == "recorded path"
    assert pairs["moved"].source == sampled["elsewhere"] / "renamed.wav" and pairs["moved"].located == "--sources"
    assert {k: pairs[k].reason for k in ("gone", "changed", "plain")} == {
        "gone": "source_missing", "changed": "source_changed", "plain": "no_melody"}
    assert "tune7.wav does not exist" in pairs["gone"].message
    without = {p.id: p for p in pair_sources(gen, None)}
    assert without["moved"].reason == "source_missing" and "give --sources" in without["moved"].message
    manifest = sampled["root"] / "manifest.jsonl"
    manifest.write_text("".join(json.dumps({"path": f"elsewhere/{name}", "style": "x"}) + "\n"
                                for name in ("a_decoy.wav", "renamed.wav", "z_decoy.wav")))
    assert {p.id: p for p in pair_sources(gen, str(manifest))}["moved"].source == manifest.parent / "elsewhere/renamed.wav"


def test_cli_reports_the_gain_of_clips_that_follow_their_melody(sampled, capsys):
    out = sampled["root"] / "report"
    assert main(["eval", "melody", "--generated", str(sampled["generated"]), "--sources", str(sampled["elsewhere"]),
                 "--out", str(out), "--samples", "2"]) == 0
    printed = capsys.readouterr().out
    assert "melody_agreement_gain" in printed and "3 of 10 generated clips left out" in printed
    report = json.loads((out / "report.json").read_text())
    m, section = report["metrics"], report["melody"]
    assert report["kind"] == "melody" and m["melody_agreement"]["n"] == 7
    assert m["melody_agreement"]["value"] == pytest.approx((6 * 7 / 8 + 1) / 7, abs=0.01)  # 7 of 8 notes, 8 of 8
    assert m["melody_agreement_shuffled"]["value"] < 0.25
    assert m["melody_agreement_gain"]["low"] > 0.5
    assert section["per_item"]["moved"]["located"] == "--sources" and section["distinct_sources"] == 7
    assert {u["id"]: u["reason"] for u in section["unpaired"]} == {
        "gone": "source_missing", "changed": "source_changed", "plain": "no_melody"}
    assert report["lineage"]["with_sidecar"] == 10 and report["config"]["frame_rate"] == 10.0
    assert report["models"]["melody"]["settings"]["frame_rate"] == 10.0 and "n2m" in report["versions"]
    assert len(report["samples"]) == 2 and all(s["reference"] for s in report["samples"])
    page = (out / "report.html").read_text()
    assert "melody_agreement_gain" in page and "clips left out (source_missing)" in page and "data:audio/ogg" in page


def test_user_mistakes_are_one_line_errors(sampled, tmp_path, capsys):
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    for name in ("gone", "plain"):
        for suffix in (".wav", ".json"):
            shutil.copy(sampled["generated"] / f"{name}{suffix}", lonely)
    cases = {
        "no generated clip could be paired": ["--generated", str(lonely)],
        "no such audio directory": ["--generated", str(tmp_path / "nothing")],
        "no such audio directory, file or glob: " + str(tmp_path / "typo"): [
            "--generated", str(sampled["generated"]), "--sources", str(tmp_path / "typo")],
        "--frame-rate: expected a number in (0, 62.5]": ["--generated", str(lonely), "--frame-rate", "0"],
    }
    for message, argv in cases.items():
        try:
            code = main(["eval", "melody", *argv, "--out", str(tmp_path / "r")])
        except SystemExit as done:  # a bad flag value: argparse exits after printing its line
            code = done.code
        err = capsys.readouterr().err.strip()
        assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "r").exists()
