"""The musicnn adherence judge: probe and tag agreement against hand-computed numbers, the bootstrap interval against
its closed form, manifest errors, and ``n2m eval adherence | fad | musiccaps --embedding musicnn`` end to end with the
real weights (installed by ``n2m models fetch``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from n2m.errors import JobFailed, UserError
from n2m.eval.adherence import fit_centroids, nearest_centroid, probe_score, read_probe_labels, tag_agreement
from n2m.eval.clap_score import bootstrap_mean
from n2m.eval.takes import Takes, read_takes


def test_probe_against_hand_computed_centroids():
    train = np.array([[0, 0], [2, 0], [0, 4], [0, 6], [5, 5], [7, 7], [6, 3]], np.float32)
    labels = ["A", "A", "B", "B", "C", "C", "C"]
    classes, centroids = fit_centroids(train, labels)
    assert classes == ["A", "B", "C"]
    np.testing.assert_allclose(centroids, [[1, 0], [0, 5], [6, 5]])
    # Squared distances to (A, B, C), by hand: (1,1): 1, 17, 41 -> A; (0.4,3.1): 9.97, 3.77, 34.97 -> B;
    # (4,3): 18, 20, 8 -> C; (2.5,4.5): 22.5, 6.5, 12.5 -> B.
    queries = np.array([[1, 1], [0.4, 3.1], [4, 3], [2.5, 4.5]], np.float32)
    predicted = nearest_centroid(classes, centroids, queries)
    assert predicted == ["A", "B", "C", "B"]
    score = probe_score(["q1", "q2", "q3", "q4"], predicted, ["A", "B", "C", "A"], reps=500, seed=0)
    assert score["accuracy"] == 0.75 and score["n"] == 4
    # chance = sum_c P(pred=c) P(true=c) = (1*2 + 2*1 + 1*1) / 4^2
    assert score["chance"] == pytest.approx(5 / 16)
    assert score["confusion"] == {"A": {"A": 1, "B": 1}, "B": {"B": 1}, "C": {"C": 1}}
    assert score["per_item"]["q4"] == {"label": "A", "predicted": "B"}
    assert 0.0 <= score["low"] <= 0.75 <= score["high"] <= 1.0
    assert {score["low"] * 4, score["high"] * 4} <= {0.0, 1.0, 2.0, 3.0, 4.0}  # means of four 0/1 values


def test_tag_agreement_paired_vs_shuffled_on_a_constructed_case():
    reference = {"a": np.array([1.0, 0, 0]), "b": np.array([0, 1.0, 0]), "c": np.array([0, 0, 1.0]),
                 "only-ref": np.array([1.0, 1, 1])}
    generated = {"a": np.array([3.0, 4, 0]), "b": np.array([0, 0.5, 0]), "c": np.array([0, 0, 2.0]),
                 "only-gen": np.array([1.0, 0, 0])}
    agreement = tag_agreement(generated, reference)
    # cos(g_a, r_a..r_c) = 0.6, 0.8, 0; g_b and g_c point along their own reference.
    assert agreement.ids == ("a", "b", "c")
    np.testing.assert_allclose(agreement.paired, [0.6, 1.0, 1.0])
    np.testing.assert_allclose(agreement.shuffled, [0.4, 0.0, 0.0])  # mean over the other two references
    section = agreement.as_dict(reps=200, seed=1)
    assert section["gain"]["mean"] == pytest.approx((0.2 + 1.0 + 1.0) / 3)
    assert section["paired"]["low"] >= 0.6 - 1e-12 and section["paired"]["high"] <= 1.0 + 1e-12
    assert section["missing_reference"] == ["only-gen"] and section["missing_generated"] == ["only-ref"]
    with pytest.raises(JobFailed):
        tag_agreement({"a": generated["a"]}, reference)


def test_takes_score_each_clip_against_its_prompt_and_average_per_prompt():
    reference = {"a": np.array([1.0, 0, 0]), "b": np.array([0, 1.0, 0]), "c": np.array([0, 0, 1.0])}
    generated = {"a": np.array([3.0, 4, 0]), "take:a_0": np.array([1.0, 0, 0]), "take:a_1": np.array([0, 0, 1.0]),
                 "b": np.array([0, 0.5, 0]), "take:b_0": np.array([0, 3.0, 4]), "c": np.array([0, 0, 2.0]),
                 "take:x_0": np.array([1.0, 1, 1])}
    prompt_of = {"take:a_0": "a", "take:a_1": "a", "take:b_0": "b", "take:x_0": "x"}
    agreement = tag_agreement(generated, reference, prompt_of)
    # By hand, cos with (r_a, r_b, r_c): a (0.6, 0.8, 0), take a_0 (1, 0, 0), take a_1 (0, 0, 1); b (0, 1, 0),
    # take b_0 (0, 0.6, 0.8); c (0, 0, 1). Paired: a (0.6 + 1 + 0) / 3, b (1 + 0.6) / 2, c 1. Shuffled: the mean of
    # each clip's other two cosines, then per prompt: a (0.4 + 0 + 0.5) / 3, b (0 + 0.4) / 2, c 0.
    assert agreement.ids == ("a", "b", "c") and agreement.clips == (3, 2, 1)
    np.testing.assert_allclose(agreement.paired, [1.6 / 3, 0.8, 1.0])
    np.testing.assert_allclose(agreement.shuffled, [0.3, 0.2, 0.0])
    section = agreement.as_dict()
    assert section["n"] == 3 and section["clips"] == 6
    assert section["missing_reference"] == ["take:x_0"] and section["missing_generated"] == []
    # without prompt_of every key is its own prompt: the takes have no reference and drop out
    plain = tag_agreement(generated, reference)
    np.testing.assert_allclose(plain.paired, [0.6, 1.0, 1.0])
    assert plain.clips == (1, 1, 1)

    # the probe: prompt p1 right in 3 of 4 clips, p2 in 1 of 2, p3 in 0 of 1 -> (0.75 + 0.5 + 0) / 3
    clips = ["p1", "p1_0", "p1_1", "p1_2", "p2", "p2_0", "p3"]
    prompts = ["p1", "p1", "p1", "p1", "p2", "p2", "p3"]
    truth = ["A", "A", "A", "A", "B", "B", "A"]
    predicted = ["A", "A", "B", "A", "B", "A", "B"]
    score = probe_score(clips, predicted, truth, reps=300, seed=0, prompts=prompts)
    assert score["accuracy"] == pytest.approx(1.25 / 3) and score["n"] == 3 and score["clips"] == 7
    # chance over clips: P(pred A) = 4/7, P(true A) = 5/7; P(pred B) = 3/7, P(true B) = 2/7
    assert score["chance"] == pytest.approx((4 * 5 + 3 * 2) / 49)
    assert score["confusion"] == {"A": {"A": 3, "B": 2}, "B": {"A": 1, "B": 1}}
    assert score["per_item"]["p2_0"] == {"label": "B", "predicted": "A", "prompt": "p2"}
    assert 0.0 <= score["low"] <= score["accuracy"] <= score["high"] <= 0.75  # resampling prompts: none above 0.75
    assert probe_score(clips, predicted, truth)["accuracy"] == pytest.approx(4 / 7)  # one clip a prompt: over clips


def test_takes_are_read_from_sidecars_and_bad_ones_are_listed_not_fatal(tmp_path):
    from n2m import audio

    for folder, stem, prompt in (("s1", "a_0", "a"), ("s1", "a_1", "a"), ("s2", "a", "a"), ("s2", "b", "b"),
                                 ("s2", "gone", "zzz"), ("s2", "nosidecar", None), ("s2", "broken", "")):
        (tmp_path / folder).mkdir(exist_ok=True)
        audio.write(tmp_path / folder / f"{stem}.wav", _track("tonal", 0, 0.5), SR)
        if prompt is not None:
            (tmp_path / folder / f"{stem}.json").write_text(
                "not json" if stem == "broken" else json.dumps({"prompt_id": prompt}))
    takes = read_takes([str(tmp_path / "s1"), str(tmp_path / "s2")], {"a", "b"})
    assert takes.keys == ("take:s1/a_0", "take:s1/a_1", "take:s2/a", "take:s2/b")
    assert takes.prompts == ("a", "a", "a", "b") and takes.per_prompt() == {"a": 3, "b": 1}
    reasons = {Path(k).stem: v for k, v in takes.left_out.items()}
    assert set(reasons) == {"gone", "nosidecar", "broken"}
    assert "not among the selected captions" in reasons["gone"] and "no JSON sidecar" in reasons["nosidecar"]
    assert "unreadable sidecar" in reasons["broken"]
    assert read_takes(None, {"a"}) == Takes()
    audio.write(tmp_path / "s1" / "a_0.flac", _track("tonal", 0, 0.5), SR)
    with pytest.raises(UserError, match="same take in two formats"):
        read_takes([str(tmp_path / "s1")], {"a"})
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no audio files"):
        read_takes([str(tmp_path / "empty")], {"a"})


def test_bootstrap_interval_of_a_mean_matches_the_normal_approximation():
    values = np.random.default_rng(3).normal(2.0, 1.5, size=400)
    low, high = bootstrap_mean(values, reps=4000, seed=0)
    half = 1.959964 * values.std(ddof=1) / np.sqrt(values.size)  # closed form for a large sample
    assert (high - low) / 2 == pytest.approx(half, rel=0.1)
    assert (low + high) / 2 == pytest.approx(values.mean(), abs=0.1 * half)
    assert bootstrap_mean(np.full(5, 0.3), reps=50) == pytest.approx((0.3, 0.3))
    with pytest.raises(ValueError):
        bootstrap_mean(np.array([1.0]))


def test_probe_manifest_errors_are_one_line_user_errors(tmp_path):
    (tmp_path / "a.wav").write_bytes(b"")
    manifest = tmp_path / "m.jsonl"
    for rows, message in (
        ([{"path": "a.wav", "style": ["rock", "pop"]}], "single value"),
        ([{"path": "a.wav"}], "single value"),
        ([{"path": "a.wav", "style": "rock", "holdout": True}], "every row is held out"),
        ([{"path": "missing.wav", "style": "rock"}], "missing"),
        ([{"path": "a.wav", "style": "rock"}, {"path": "x/a.wav", "style": "pop"}], "share the file stem"),
    ):
        manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
        with pytest.raises(UserError, match=message):
            read_probe_labels(manifest, "style")
    manifest.write_text('{"path": "a.wav", "style": "rock"}\n')
    labels = read_probe_labels(manifest, "style")
    assert labels.labels == {"a": "rock"} and labels.centroid_files == (tmp_path / "a.wav",)
    assert not labels.held_out_files


# ---------------------------------------------------------------------------------------------------------------------
# End to end with the real musicnn weights

SR = 16000


def _track(kind: str, seed: int, seconds: float = 4.0) -> np.ndarray:
    """``[1, T]``: a harmonic tone with vibrato (``tonal``) or decaying noise bursts every 0.25 s (``drums``)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    if kind == "tonal":
        phase = 2 * np.pi * rng.uniform(180, 440) * t + 0.2 * np.sin(2 * np.pi * 5 * t)
        x = sum(0.3 / k * np.sin(k * phase) for k in range(1, 6))
    else:
        x = rng.standard_normal(t.size) * np.exp(-30 * (t % 0.25)) * 0.5
    return x.astype(np.float32)[None]


@pytest.fixture(scope="module")
def musicnn_corpus(tmp_path_factory):
    """A manifest of 10 tracks in two classes (2 held out per class), generated clips named by the held-out ids
    (their track plus noise), and an installed MSD_musicnn (skip when ``n2m models fetch`` has not run)."""
    try:
        from n2m.models import model_dir

        model_dir("MSD_musicnn")
    except (ImportError, UserError) as err:
        pytest.skip(f"the real musicnn weights are not installed (run `n2m models fetch`): {err}")
    from n2m import audio

    root = tmp_path_factory.mktemp("musicnn")
    for name in ("tracks", "gen"):
        (root / name).mkdir()
    rows = []
    for k in range(10):
        kind, held = ("tonal", "drums")[k % 2], k >= 6
        track = _track(kind, seed=k)
        audio.write(root / "tracks" / f"t{k}.wav", track, SR)
        rows.append({"path": f"tracks/t{k}.wav", "style": kind, "holdout": held, "caption": f"{kind} track {k}"})
        if held:
            noisy = track + 0.01 * np.random.default_rng(100 + k).standard_normal(track.shape).astype(np.float32)
            audio.write(root / "gen" / f"t{k}.wav", noisy, SR)
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "held.txt").write_text("".join(f"tracks/t{k}.wav\n" for k in range(6, 10)))
    (root / "captions.jsonl").write_text("".join(json.dumps({"id": f"t{k}", "text": rows[k]["caption"]}) + "\n"
                                                 for k in range(6, 10)))
    return root


@pytest.fixture(scope="module")
def eval_cli():
    from n2m import cli

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(cli.COMMANDS, "eval", ("evaluate generated audio", "n2m.eval.cli"))
        yield cli.main


@pytest.fixture(scope="module")
def direct(musicnn_corpus) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per file name (``t3.wav``, ``gen/t7.wav``): penultimate ``[P, 200]`` and taggram ``[P, 50]`` straight from
    n2m.musicnn, not through eval."""
    from n2m import audio
    from n2m.musicnn import Musicnn

    model = Musicnn.from_pretrained("MSD_musicnn")
    out = {}
    for path in sorted(musicnn_corpus.rglob("*.wav")):
        analysis = model.analyse(audio.decode(str(path)).samples, SR)
        out[str(path.relative_to(musicnn_corpus / "tracks")) if path.parent.name == "tracks"
            else f"gen/{path.name}"] = (analysis.features["penultimate"], analysis.taggram)
    return out


def test_adherence_command_end_to_end(musicnn_corpus, eval_cli, direct, tmp_path):
    root = musicnn_corpus
    out = tmp_path / "adh"
    assert eval_cli(["eval", "adherence", "--generated", str(root / "gen"), "--reference", str(root / "held.txt"),
                     "--probe-labels", str(root / "manifest.jsonl"), "--prompts", str(root / "captions.jsonl"),
                     "--bootstrap", "200", "--samples", "2", "--out", str(out), "--cache-dir",
                     str(root / "cache")]) == 0
    rep = json.loads((out / "report.json").read_text())
    m = rep["metrics"]
    # Tag agreement by hand from the model's own taggrams: clip tag vector = mean over patches.
    g = np.stack([direct[f"gen/t{k}.wav"][1].mean(0) for k in range(6, 10)])
    r = np.stack([direct[f"t{k}.wav"][1].mean(0) for k in range(6, 10)])
    cos = (g / np.linalg.norm(g, axis=1, keepdims=True)) @ (r / np.linalg.norm(r, axis=1, keepdims=True)).T
    assert m["musicnn_tag_agreement"]["value"] == pytest.approx(np.diag(cos).mean(), abs=1e-5)
    assert m["musicnn_tag_agreement_shuffled"]["value"] == pytest.approx((cos.sum() - np.trace(cos)) / 12, abs=1e-5)
    assert m["musicnn_tag_gain"]["value"] > 0
    probe = rep["adherence"]["probe"]
    assert probe["classes"] == {"drums": 3, "tonal": 3} and probe["centroid_tracks"] == 6
    assert m["musicnn_probe_accuracy"]["n"] == 4 and m["musicnn_probe_ceiling"]["n"] == 4
    assert m["musicnn_probe_ceiling"]["value"] == 1.0  # a tone and a drum loop are far apart for any music tagger
    assert m["musicnn_probe_chance"]["value"] == pytest.approx(0.5)
    from n2m.musicnn import Musicnn

    tagger_tags = set(Musicnn.from_pretrained("MSD_musicnn").tags)
    for sample in rep["samples"]:
        assert len(sample["generated_tags"]) == 5 and {t for t, _ in sample["generated_tags"]} <= tagger_tags
        assert sample["prompt"].endswith(f"track {sample['id'][1:]}")
    html = (out / "report.html").read_text()
    assert "Adherence (musicnn)" in html and "real held-out tracks (ceiling)" in html
    assert sample["generated_tags"][0][0] in html.split("<h2>Listen</h2>")[1]


@pytest.mark.filterwarnings("ignore:Matrix is singular")  # 5 patches in 200 dimensions: sqrtm of a singular product
def test_fad_musicnn_zero_for_a_set_with_itself_symmetric_and_matching_a_direct_computation(
        musicnn_corpus, eval_cli, direct, tmp_path):
    from scipy import linalg

    root = musicnn_corpus
    tonal = [str(root / "tracks" / f"t{k}.wav") for k in (0, 2, 4, 6, 8)]
    drums = [str(root / "tracks" / f"t{k}.wav") for k in (1, 3, 5, 7, 9)]
    (tmp_path / "tonal.txt").write_text("\n".join(tonal) + "\n")
    (tmp_path / "drums.txt").write_text("\n".join(drums) + "\n")
    values = {}
    for a, b in (("tonal", "tonal"), ("tonal", "drums"), ("drums", "tonal")):
        out = tmp_path / f"{a}-{b}"
        assert eval_cli(["eval", "fad", "--reference", str(tmp_path / f"{a}.txt"), "--generated",
                         str(tmp_path / f"{b}.txt"), "--embedding", "musicnn", "--bootstrap", "0", "--samples", "1",
                         "--out", str(out), "--cache-dir", str(root / "cache")]) == 0
        rep = json.loads((out / "report.json").read_text())
        values[a, b] = rep["metrics"]["FAD_musicnn"]["value"]
    assert values["tonal", "tonal"] == 0.0
    assert values["tonal", "drums"] == pytest.approx(values["drums", "tonal"], rel=1e-6)
    assert rep["fad"]["musicnn"]["generated"]["frames"] == 5  # one 3 s patch per 4 s clip
    assert rep["models"]["musicnn"]["settings"]["layer"] == "penultimate"
    assert len(rep["samples"][0]["generated_tags"]) == 5
    # FAD by a second path: n2m.musicnn features and the Fréchet distance written out with scipy's sqrtm.
    x = np.concatenate([direct[f"t{k}.wav"][0] for k in (0, 2, 4, 6, 8)]).astype(np.float64)
    y = np.concatenate([direct[f"t{k}.wav"][0] for k in (1, 3, 5, 7, 9)]).astype(np.float64)
    mu, sx, sy = x.mean(0) - y.mean(0), np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    direct = mu @ mu + np.trace(sx) + np.trace(sy) - 2 * np.trace(linalg.sqrtm(sx @ sy).real)
    assert values["tonal", "drums"] == pytest.approx(direct, rel=1e-3)


def test_musiccaps_reports_musicnn_beside_fad_and_the_clap_score(musicnn_corpus, eval_cli, clap_dir, tmp_path,
                                                                 capsys):
    root = musicnn_corpus
    out = tmp_path / "mc"
    assert eval_cli(["eval", "musiccaps", "--captions", str(root / "captions.jsonl"), "--id-column", "id",
                     "--caption-column", "text", "--reference-audio", str(root / "tracks"), "--generated",
                     str(root / "gen"), "--embedding", "musicnn:MSD_musicnn:penultimate", "--clap", clap_dir,
                     "--probe-labels", str(root / "manifest.jsonl"), "--probe-column", "style", "--bootstrap", "50",
                     "--samples", "4", "--out", str(out), "--no-cache"]) == 0
    rep = json.loads((out / "report.json").read_text())
    for key in ("FAD_musicnn", "FAD_CLAP", "CLAP_score", "musicnn_tag_agreement", "musicnn_tag_gain",
                "musicnn_probe_accuracy", "musicnn_probe_ceiling"):
        assert rep["metrics"][key]["value"] is not None, key
    assert rep["metrics"]["musicnn_tag_agreement"]["n"] == rep["metrics"]["CLAP_score"]["n"] == 4
    assert rep["models"]["musicnn"]["id"].startswith("musicnn:MSD_musicnn@")
    assert rep["adherence"]["probe"]["column"] == "style"
    assert "FAD_musicnn" in capsys.readouterr().out
    assert len(rep["samples"]) == 4
    for sample in rep["samples"]:  # every player row: the generated clip's and its reference's top tags
        assert len(sample["generated_tags"]) == len(sample["reference_tags"]) == 5
    metrics_table = (out / "report.html").read_text().split("<h2>Metrics</h2>")[1].split("<h2>")[0]
    for key in ("FAD_musicnn", "FAD_CLAP", "CLAP_score", "musicnn_tag_gain", "musicnn_probe_accuracy",
                "musicnn_probe_ceiling"):
        assert key in metrics_table, key
    code = eval_cli(["eval", "fad", "--reference", str(root / "gen"), "--generated", str(root / "gen"),
                     "--embedding", "musicnn:MSD_musicnn:no_such_layer", "--out", str(tmp_path / "bad")])
    assert code == 2 and "no layer 'no_such_layer'" in capsys.readouterr().err


def test_musiccaps_takes_judge_every_clip_of_a_prompt(musicnn_corpus, eval_cli, direct, tmp_path):
    """Each held-out prompt gets one take: the track of the other class next to it (t6 <-> t7, t8 <-> t9), so the
    probe must read (1 + 0) / 2 per prompt, and the tag figures the per-prompt means of the model's own taggrams."""
    import shutil

    root = musicnn_corpus
    takes = tmp_path / "takes"
    takes.mkdir()
    swap = {6: 7, 7: 6, 8: 9, 9: 8}
    for k, other in swap.items():
        shutil.copy(root / "tracks" / f"t{other}.wav", takes / f"t{k}_0.wav")
        (takes / f"t{k}_0.json").write_text(json.dumps({"prompt_id": f"t{k}"}))
    out = tmp_path / "mc"
    assert eval_cli(["eval", "musiccaps", "--captions", str(root / "captions.jsonl"), "--id-column", "id",
                     "--caption-column", "text", "--reference-audio", str(root / "tracks"), "--generated",
                     str(root / "gen"), "--takes", str(takes), "--embedding", "musicnn", "--probe-labels",
                     str(root / "manifest.jsonl"), "--bootstrap", "50", "--samples", "4", "--out", str(out),
                     "--no-cache"]) == 0
    rep = json.loads((out / "report.json").read_text())
    m = rep["metrics"]
    assert rep["counts"]["takes_found"] == 4 and rep["takes"]["per_prompt"] == {f"t{k}": 1 for k in swap}
    probe = rep["adherence"]["probe"]["generated"]
    assert m["musicnn_probe_accuracy"]["value"] == pytest.approx(0.5) and probe["n"] == 4 and probe["clips"] == 8
    assert "8 clips, each prompt the mean of its own" in m["musicnn_probe_accuracy"]["note"]
    tags = {f"t{k}": [direct[f"gen/t{k}.wav"][1].mean(0), direct[f"t{swap[k]}.wav"][1].mean(0)] for k in swap}
    r = {f"t{k}": direct[f"t{k}.wav"][1].mean(0) for k in swap}
    cos = lambda a, b: float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))  # noqa: E731
    paired = [np.mean([cos(g, r[i]) for g in tags[i]]) for i in sorted(r)]
    shuffled = [np.mean([np.mean([cos(g, r[j]) for j in r if j != i]) for g in tags[i]]) for i in sorted(r)]
    assert m["musicnn_tag_agreement"]["value"] == pytest.approx(np.mean(paired), abs=1e-5)
    assert m["musicnn_tag_agreement_shuffled"]["value"] == pytest.approx(np.mean(shuffled), abs=1e-5)
    assert rep["fad"]["musicnn"]["generated"]["files"] == 8
    assert len(rep["samples"]) == 4 and all("/takes/" not in s["generated"] for s in rep["samples"])


def test_adherence_user_mistakes_are_one_line_errors(eval_cli, tmp_path, capsys):
    from n2m import audio

    audio.write(tmp_path / "a.wav", _track("tonal", 0, 1.5), SR)
    assert eval_cli(["eval", "adherence", "--generated", str(tmp_path / "a.wav")]) == 2
    assert "give --reference (tag agreement) and/or --probe-labels" in capsys.readouterr().err
    (tmp_path / "caps.jsonl").write_text('{"id": "a", "text": "a tone"}\n')
    code = eval_cli(["eval", "musiccaps", "--captions", str(tmp_path / "caps.jsonl"), "--id-column", "id",
                     "--caption-column", "text", "--reference-audio", str(tmp_path), "--generated", str(tmp_path),
                     "--clap", "/nowhere", "--probe-labels", str(tmp_path / "caps.jsonl")])
    assert code == 2 and "--probe-labels needs --embedding musicnn" in capsys.readouterr().err
