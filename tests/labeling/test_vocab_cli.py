"""``n2m vocab`` end to end through the real CLI: the template generator on synthetic-corpus metadata, every input
format, prompt files, the built-in aspects and extra lists, ``show``, and one-line errors for user mistakes."""

from __future__ import annotations

import json
import random
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from n2m.cli import main
from n2m.labeling.vocab.aspects import CATEGORIES, build_aspects, builtin_aspects
from n2m.labeling.vocab.backends import GenerationOptions
from n2m.labeling.vocab.clean import near_key
from n2m.labeling.vocab.template import TemplateBackend
from n2m.labeling.vocab.tracks import read_tracks
from n2m.schema import SOURCES_SCHEMA, VOCAB_SCHEMA, text_id

STYLES = ["ambient", "rock", "electronic", "waltz", "funk", "lo-fi"]
MOODS = ["calm", "happy", "melancholic", "energetic", "dreamy", "dark"]
INSTRUMENTS = ["piano", "plucked string", "organ", "synth lead", "string pad", "bell"]


def synth_rows(n: int, seed: int = 0) -> list[dict]:
    """Rows shaped like ``n2m synth``'s manifest.jsonl."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        style, mood, instruments = rng.choice(STYLES), rng.choice(MOODS), rng.sample(INSTRUMENTS, 3)
        rows.append({"path": f"audio/track_{i:03d}.{rng.choice(['wav', 'flac', 'ogg', 'mp3'])}",
                     "title": f"Quartz Meadow {i}", "artist": f"Synth Collective {i % 3}",
                     "tags": [style, mood, *instruments],
                     "caption": f"A {mood} {style} track featuring {', '.join(instruments)} at {60 + 10 * i} BPM.",
                     "bpm": 60 + 10 * i, "key": rng.choice("CDEFGAB"), "mode": rng.choice(["major", "minor"]),
                     "instruments": instruments, "style": style, "mood": mood, "holdout": i % 5 == 4})
    return rows


@pytest.fixture()
def manifest(tmp_path):
    path = tmp_path / "corpus" / "manifest.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(r) + "\n" for r in synth_rows(12)))
    return path


def test_template_generate_on_synthetic_metadata(manifest, tmp_path, capsys):
    out = tmp_path / "vocab" / "demo_lf.parquet"
    assert main(["vocab", "generate", "--from", str(manifest), "--llm", "template", "--out", str(out),
                 "--per-track", "3"]) == 0
    printed = capsys.readouterr().out
    assert "NOT a language model" in printed and "36 total" in printed

    table = pq.read_table(out)
    assert table.schema.equals(VOCAB_SCHEMA)
    rows = table.to_pylist()
    assert len(rows) > 12 and len({r["id"] for r in rows}) == len(rows)
    assert all(r["id"] == text_id(r["text"]) and r["kind"] == "long" and r["backend"] == "template" for r in rows)
    captions = {near_key(r["caption"]) for r in synth_rows(12)}
    for row in rows:
        key = near_key(row["text"])
        assert key not in captions and "quartz meadow" not in key and "synth collective" not in key
        assert not re.search(r"[.!?] +[A-Z]", row["text"])  # one sentence per entry
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["backend_info"]["is_llm"] is False
    assert meta["prompts"]["ids"] == ["describe"] and len(meta["prompts"]["hash"]) == 40
    assert meta["counts"]["sentences"] == meta["counts"]["kept"] + meta["counts"]["rejected"] + meta["counts"][
        "duplicates_removed"]
    assert {"python", "pyarrow", "requests"} <= set(meta["versions"]) and meta["created"]

    assert main(["vocab", "show", str(out), "--examples", "3", "--rejected"]) == 0
    shown = capsys.readouterr().out
    assert f"{len(rows)} long-form entries" in shown and "kinds: long" in shown
    assert "duplicates removed" in shown and "rejected by reason" in shown and shown.count("[long]") == 3


def test_template_sentences_follow_the_metadata_not_the_caption():
    backend = TemplateBackend(GenerationOptions(seed=0))
    for row in synth_rows(12):
        from n2m.labeling.vocab.tracks import _track

        track = _track(row, "x")
        texts = [backend.compose(track, "describe", s) for s in range(4)]
        assert len(set(texts)) > 1  # varied phrasings across samples
        for text in texts:
            low = text.lower()
            assert row["style"] in low or row["style"].replace("-", "") in low
            assert any(i in low for i in row["instruments"]) or row["mood"] in low
            assert near_key(row["caption"]) not in near_key(text)
            assert "quartz" not in low and "collective" not in low
            other_styles = [s for s in STYLES if s != row["style"] and s not in ("rock",)]
            assert not any(re.search(rf"\b{s}\b", low) for s in other_styles)
            if row["bpm"] <= 70:
                assert not re.search(r"\b(fast|brisk|upbeat|rapid|racing|lively)\b", low)
            if row["bpm"] >= 150:
                assert not re.search(r"\b(slow|unhurried|leisurely)\b", low)
    assert backend.compose(_track(synth_rows(1)[0], "x"), "describe", 0) == TemplateBackend(
        GenerationOptions(seed=0)).compose(_track(synth_rows(1)[0], "x"), "describe", 0)  # deterministic


def test_inputs_sources_parquet_csv_parquet_and_bad_rows(tmp_path):
    rows = synth_rows(4)
    statuses = ["ok", "failed", "ok", "duplicate"]
    table = pa.Table.from_pylist([
        {"source_id": f"{i:016x}", "source_uri": f"file:///{r['path']}", "status": s, "reason": "", "message": "",
         "duration_s": 40.0, "clips": 4, "split": "train", "pcm_sha1": "", "duplicate_of": "",
         "meta_json": json.dumps(r)} for i, (r, s) in enumerate(zip(rows, statuses))], schema=SOURCES_SCHEMA)
    pq.write_table(table, tmp_path / "sources.parquet")
    tracks = read_tracks(str(tmp_path / "sources.parquet"))
    assert [t.track_id for t in tracks.tracks] == [f"{0:016x}", f"{2:016x}"]
    assert tracks.tracks[0].title == rows[0]["title"] and tracks.tracks[0].meta["style"] == rows[0]["style"]
    assert tracks.skipped == {"status_failed": 1, "status_duplicate": 1}

    csv_path = tmp_path / "m.csv"
    csv_path.write_text('id,title,artist,tags\nx1,One,Ann,"rock;calm"\nx2,,,\nx3,Three,Bo,jazz,extra\n')
    csv_tracks = read_tracks(str(csv_path))
    assert [(t.track_id, t.tags) for t in csv_tracks.tracks] == [("x1", ("rock", "calm"))]
    assert csv_tracks.skipped == {"no_metadata": 1, "bad_row": 1}

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    assert [t.track_id for t in read_tracks(str(tmp_path / "m.parquet"), max_tracks=2).tracks] == [
        r["path"] for r in rows[:2]]

    jsonl = tmp_path / "m.jsonl"
    jsonl.write_text(json.dumps(rows[0]) + "\n{broken\n" + json.dumps(rows[4 - 1]) + "\n")
    got = read_tracks(str(jsonl), exclude_holdout=True)
    assert [t.title for t in got.tracks] == [rows[0]["title"], rows[3]["title"]] and got.skipped == {"bad_row": 1}


def test_config_yaml_runs_generate_on_a_build_sources_table(tmp_path, capsys):
    rows = synth_rows(3)
    table = pa.Table.from_pylist([
        {"source_id": f"{i:016x}", "source_uri": f"file:///{r['path']}", "status": "ok", "reason": "", "message": "",
         "duration_s": 40.0, "clips": 4, "split": "train", "pcm_sha1": "", "duplicate_of": "",
         "meta_json": json.dumps(r)} for i, r in enumerate(rows)], schema=SOURCES_SCHEMA)
    pq.write_table(table, tmp_path / "sources.parquet")
    out = tmp_path / "vocab" / "lf.parquet"
    config = tmp_path / "vocab.yaml"
    config.write_text(f"from: {tmp_path / 'sources.parquet'}\nllm: template\nout: {out}\nper-track: 2\n")
    assert main(["vocab", "generate", "--config", str(config), "--seed", "3"]) == 0
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["requests"]["total"] == 6 and meta["params"]["seed"] == 3 and meta["input"]["format"] == "parquet"
    assert {r["track_id"] for r in pq.read_table(out).to_pylist()} <= {f"{i:016x}" for i in range(3)}
    config.write_text("form: x.jsonl\n")
    assert main(["vocab", "generate", "--config", str(config), "--from", "a", "--llm", "template", "--out", "b"]) == 2
    assert "unknown option 'form'" in capsys.readouterr().err


def test_prompts_file_ids_become_provenance(manifest, tmp_path, capsys):
    prompts = tmp_path / "prompts.yaml"
    prompts.write_text("prompts:\n  - id: short\n    template: 'Describe {track} in {mood} words.'\n"
                       "  - id: gear\n    system: 'Be brief.'\n    template: 'What instruments play in {track}?'\n")
    out = tmp_path / "lf.parquet"
    assert main(["vocab", "generate", "--from", str(manifest), "--llm", "template", "--out", str(out),
                 "--prompts", str(prompts), "--max-tracks", "4"]) == 0
    rows = pq.read_table(out).to_pylist()
    assert {r["prompt_id"] for r in rows} == {"short", "gear"}
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["requests"]["total"] == 4 * 2 and meta["prompts"]["ids"] == ["short", "gear"]

    prompts.write_text("describe: 'Tell me about {titel}.'\n")
    assert main(["vocab", "generate", "--from", str(manifest), "--llm", "template", "--out", str(out),
                 "--prompts", str(prompts)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "titel" in err


def test_dry_run_writes_nothing(manifest, tmp_path, capsys):
    out = tmp_path / "v" / "lf.parquet"
    assert main(["vocab", "generate", "--from", str(manifest), "--llm", "template", "--out", str(out),
                 "--dry-run"]) == 0
    assert "12 requests" in capsys.readouterr().out and not out.exists()


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["vocab", "generate", "--from", "{tmp}/missing.jsonl", "--llm", "template", "--out", "{tmp}/v.parquet"],
         "no such file"),
        (["vocab", "generate", "--from", "{manifest}", "--llm", "gpt-9", "--out", "{tmp}/v.parquet"],
         "unknown --llm backend 'gpt-9'"),
        (["vocab", "generate", "--from", "{manifest}", "--llm", "template", "--out", "{tmp}/v.csv"], ".parquet"),
        (["vocab", "generate", "--from", "{manifest}", "--llm", "template", "--out", "{tmp}/v.parquet",
          "--per-track", "0"], "--per-track"),
        (["vocab", "generate", "--from", "{tmp}/m.txt", "--llm", "template", "--out", "{tmp}/v.parquet"],
         "unknown input type"),
        (["vocab", "show", "{tmp}/none.parquet"], "no such vocabulary"),
        (["vocab", "generate", "--from", "{manifest}", "--llm", "template"], "missing --out"),
        (["vocab", "aspects", "--out", "{tmp}/a.parquet", "--extra", "{tmp}/none.txt"], "no such file"),
        (["vocab", "aspects", "--out", "{tmp}/a.parquet", "--only-aspects", "moood"], "no entry has the aspect moood"),
        (["vocab", "aspects", "--out", "{tmp}/a.parquet", "--only-aspects", "mood", "--skip-aspects", "genre"],
         "not allowed with"),
        (["vocab", "aspects", "--out", "{tmp}/a.parquet", "--skip-aspects", " , "], "one or more aspect names"),
        (["vocab", "aspects", "--out", "{tmp}/a.parquet", "--no-builtin", "--extra", "{tmp}/m.txt",
          "--only-aspects", "mood"], "no entry has the aspect mood"),
    ],
)
def test_user_mistakes_are_one_line_errors(argv, needle, manifest, tmp_path, capsys):
    (tmp_path / "m.txt").write_text("x")
    argv = [a.format(tmp=tmp_path, manifest=manifest) for a in argv]
    try:
        code = main(argv)
    except SystemExit as done:  # a bad flag value is refused while parsing, with the same one-line format
        code = done.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("n2m vocab: error:") and needle in err


def test_builtin_aspects_cover_the_categories_and_the_synthetic_vocabulary():
    entries = builtin_aspects()
    assert len(entries) >= 400
    assert {aspect for _, aspect in entries} == set(CATEGORIES)
    per_category = {c: sum(a == c for _, a in entries) for c in CATEGORIES}
    assert all(per_category[c] >= 10 for c in ("genre", "subgenre", "mood", "instrument", "vocal", "tempo", "rhythm",
                                                "era", "production", "usage"))
    assert len({near_key(t) for t, _ in entries}) == len(entries)  # no duplicates in the data file
    by_text = dict(entries)
    # the synthetic corpus's ground-truth words (n2m synth), which label-eval measures against
    for style in ("ambient", "rock", "electronic", "waltz", "funk", "lo-fi", "drum and bass"):
        assert by_text[style] == "genre"
    for instrument in ("piano", "plucked string", "plucked guitar", "guitar", "organ", "synth lead", "string pad", "bell",
                       "electric bass", "synth bass", "sub bass", "upright bass", "drums"):
        assert by_text[instrument] == "instrument"
    for tempo in ("slow", "mid-tempo", "upbeat", "fast"):
        assert by_text[tempo] == "tempo"
    for mood in ("calm", "dreamy", "mysterious", "melancholic", "nostalgic", "relaxed", "romantic", "elegant", "playful",
                 "groovy", "happy", "confident", "uplifting", "energetic", "aggressive", "dark", "euphoric", "tense",
                 "hypnotic"):
        assert by_text[mood] == "mood"


def test_aspects_cli_with_extra_lists(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("# my tags\nshimmering arpeggios\nslow\ngritty tape loops\tproduction\n")
    (tmp_path / "musiccaps.csv").write_text(
        'ytid,aspect_list\nabc,"[\'low quality\', \'sustained strings melody\', \'Sustained strings melody!\']"\n'
        'def,"[not a list"\n')
    (tmp_path / "more.jsonl").write_text('{"text": "glassy bells", "aspect": "instrument"}\n{"nope": 1}\n')
    out = tmp_path / "vocab" / "aspects.parquet"
    assert main(["vocab", "aspects", "--out", str(out), "--extra", str(tmp_path / "mine.txt"),
                 "--extra", str(tmp_path / "musiccaps.csv"), "--extra", str(tmp_path / "more.jsonl")]) == 0
    rows = pq.read_table(out).to_pylist()
    builtin = len(builtin_aspects())
    by_text = {r["text"]: r for r in rows}
    assert len(rows) == builtin + 4  # shimmering, gritty, sustained strings melody, glassy bells (the rest are dups)
    assert by_text["gritty tape loops"]["aspect"] == "production" and by_text["shimmering arpeggios"]["aspect"] == "extra"
    assert by_text["sustained strings melody"]["aspect"] == "musiccaps" and by_text["glassy bells"]["aspect"] == "instrument"
    assert by_text["slow"]["backend"] == "builtin" and by_text["glassy bells"]["backend"] == "file"
    assert all(r["kind"] == "short" and r["id"] == text_id(r["text"]) for r in rows)
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["counts"]["duplicates_removed"] == 3  # slow, low quality, "Sustained strings melody!"
    assert [s["bad_line"] for s in meta["sources"]] == [0, 0, 1, 1]

    capsys.readouterr()
    assert main(["vocab", "show", str(out), "--examples", "4"]) == 0
    shown = capsys.readouterr().out
    assert f"{len(rows)} short-form entries" in shown and "aspects: " in shown and "instrument" in shown
    assert shown.count("[short/") == 4 and "duplicates removed: 3" in shown


def test_only_and_skip_aspects_split_the_vocabulary_by_category(tmp_path, capsys):
    (tmp_path / "mine.txt").write_text("stormy\tmood\nsunlit\tMood\ncalm\tmood\nglassy bells\tinstrument\n")
    mine = str(tmp_path / "mine.txt")
    builtin = builtin_aspects()
    builtin_moods = [t for t, a in builtin if a == "mood"]
    assert main(["vocab", "aspects", "--out", str(tmp_path / "mood.parquet"), "--extra", mine,
                 "--only-aspects", "Mood"]) == 0
    assert main(["vocab", "aspects", "--out", str(tmp_path / "rest.parquet"), "--extra", mine,
                 "--skip-aspects", "mood"]) == 0
    mood = pq.read_table(tmp_path / "mood.parquet").to_pylist()
    rest = pq.read_table(tmp_path / "rest.parquet").to_pylist()
    # "calm" is a built-in mood: the duplicate is dropped, the two new moods kept (aspect lower-cased)
    assert [r["text"] for r in mood] == builtin_moods + ["stormy", "sunlit"]
    assert {r["aspect"] for r in mood} == {"mood"}
    assert [r["text"] for r in rest] == [t for t, a in builtin if a != "mood"] + ["glassy bells"]
    # the two files split the vocabulary that neither flag writes
    assert len(mood) + len(rest) == len(build_aspects([mine]).rows)
    meta = json.loads((tmp_path / "mood.parquet").with_suffix(".json").read_text())
    assert [s["other_aspect"] for s in meta["sources"]] == [len(builtin) - len(builtin_moods), 1]
    assert meta["config"]["only_aspects"] == "mood" and meta["aspects"] == {"mood": len(mood)}
    assert "other_aspect 1" in capsys.readouterr().out


def test_aspects_without_builtin(tmp_path):
    (tmp_path / "mine.txt").write_text("dusty drums\n")
    assert [r["text"] for r in build_aspects([str(tmp_path / "mine.txt")], builtin=False).rows] == ["dusty drums"]


def test_help_explains_each_action(capsys):
    for action in ("generate", "aspects", "show"):
        with pytest.raises(SystemExit) as done:
            main(["vocab", action, "--help"])
        assert done.value.code == 0
    assert "--per-track" in capsys.readouterr().out
