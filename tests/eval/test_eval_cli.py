"""``n2m eval`` end to end through the real CLI: fad, clap-score, musiccaps, compare; the report files and page."""

import base64
import csv
import importlib.util
import io
import json
import shutil
import subprocess

import numpy as np
import pytest
from eval_helpers import tone

from n2m import audio, cli
from n2m.eval import embeddings, frechet
from n2m.eval import report as reports
from n2m.eval.audio_sets import Preprocess, embed_files, list_audio
from n2m.eval.metrics import FrechetAudioDistance
from n2m.provenance import file_hash


@pytest.fixture(scope="module", autouse=True)
def _registered():
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(cli.COMMANDS, "eval", ("evaluate generated audio: FAD, CLAP score, MusicCaps", "n2m.eval.cli"))
        yield


@pytest.fixture(scope="module")
def fad_run(_registered, tmp_path_factory, audio_sets, vggish_weights, clap_dir):
    out = tmp_path_factory.mktemp("fad") / "run"
    cache = out.parent / "cache"
    argv = ["eval", "fad", "--reference", str(audio_sets["reference"]), "--generated", str(audio_sets["generated"]),
            "--embedding", f"vggish:{vggish_weights}", "--embedding", f"clap:{clap_dir}", "--inf", "--per-song",
            "--bootstrap", "30", "--out", str(out), "--cache-dir", str(cache)]
    code = cli.main(list(argv))
    return {"code": code, "out": out, "argv": argv, "cache": cache}


def test_fad_report_figures_and_provenance(fad_run, audio_sets, vggish_weights, clap_dir):
    assert fad_run["code"] == 0
    rep = json.loads((fad_run["out"] / "report.json").read_text())
    for name in ("FAD_VGG", "FAD_CLAP", "FAD_VGG_inf", "FAD_CLAP_inf", "FAD_VGG_per_song_median"):
        assert rep["metrics"][name]["value"] is not None and rep["metrics"][name]["value"] >= 0, name
    assert rep["metrics"]["FAD_VGG"]["n"] == 6
    assert rep["models"]["vggish"]["id"].startswith(f"vggish:{file_hash(vggish_weights)}")
    assert rep["models"]["vggish"]["settings"] == {"framing": "torchvggish", "postprocess": "none"}
    assert rep["fad"]["vggish"]["bootstrap"]["reps"] == 30
    assert len(rep["fad"]["clap"]["per_song"]) == 6
    assert rep["lineage"]["with_sidecar"] == 6
    assert rep["lineage"]["values"]["label_set"] == ["demo-labels"]
    assert rep["versions"]["torch"] and rep["config"]["embedding"]
    # the noise check rides along (n2m.eval.flatness): one value per clip, the generated median among them
    per_clip = rep["flatness"]
    assert rep["metrics"]["spectral_flatness"]["n"] == 6 and rep["metrics"]["spectral_flatness_reference"]["n"] == 6
    assert 0.0 <= rep["metrics"]["spectral_flatness"]["value"] <= 1.0 and per_clip
    # FAD_VGG again by a second path: the torchmetrics sum-form statistics over the same embeddings.
    vgg = embeddings.load(f"vggish:{vggish_weights}")
    metric = FrechetAudioDistance(dim=128)
    import torch

    for side, real in (("reference", True), ("generated", False)):
        emb = embed_files(list_audio(audio_sets[side]), vgg, Preprocess(), fad_run["cache"], progress=False)
        assert emb.cache_hits == 6  # the CLI run filled the cache
        metric.update(torch.from_numpy(emb.all_frames()), real=real)
    assert rep["metrics"]["FAD_VGG"]["value"] == pytest.approx(metric.compute().item(), rel=1e-5)


def test_report_page_is_self_contained(fad_run):
    html = (fad_run["out"] / "report.html").read_text()
    assert html.count("<svg") >= 4  # two FAD-inf fits and two per-song histograms
    assert "data:audio/ogg;base64," in html
    for needle in ("<script", "<link", 'src="http', "href=\"http", "url(http", "@import"):
        assert needle not in html
    uri = html.split('src="data:audio/ogg;base64,', 1)[1].split('"', 1)[0]
    decoded = audio.decode(base64.b64decode(uri))
    assert decoded.sample_rate == 16000 and decoded.samples.shape[1] > 16000
    assert "data:" not in (fad_run["out"] / "report.json").read_text()


def test_audio_size_cap(tmp_path, audio_sets):
    rep = reports.base_report("fad", "cap", {})
    items = [{"id": p.stem, "generated": str(p), "reference": None} for p in list_audio(audio_sets["generated"])]
    reports.attach_samples(rep, items, count=6, max_bytes=30_000)
    assert rep["samples_bytes"] <= 30_000
    assert any("cap" in s.get("generated_note", "") for s in rep["samples"])


def test_report_renders_in_headless_chromium(fad_run, tmp_path):
    browser = shutil.which("chromium") or shutil.which("chromium-headless-shell") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no chromium on this machine")
    from PIL import Image

    shot = tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    "--window-size=1200,1600", f"--screenshot={shot}", (fad_run["out"] / "report.html").as_uri()],
                   check=True, capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB"), dtype=np.float32)
    assert pixels.shape[:2] == (1600, 1200)
    assert pixels.std() > 10  # text, tables and plots, not a blank page
    # The plot colours are on the page (the SVG rendered).
    blue = np.all(np.abs(pixels - np.array([0x2A, 0x6F, 0xDB])) < 30, axis=-1)
    assert blue.sum() > 100


def test_clap_score_command(tmp_path, audio_sets, clap_dir):
    prompts = tmp_path / "prompts.jsonl"
    lines = audio_sets["prompts"].read_text().splitlines()
    prompts.write_text("\n".join(lines[1:] + ['{"id": "orphan", "text": "a prompt with no audio"}']) + "\n")
    out = tmp_path / "score"
    code = cli.main(["eval", "clap-score", "--audio", str(audio_sets["generated"]), "--prompts", str(prompts),
                     "--model", clap_dir, "--reference", str(audio_sets["reference"]), "--out", str(out),
                     "--no-cache"])
    assert code == 0
    rep = json.loads((out / "report.json").read_text())
    first = json.loads(lines[0])["id"]
    assert rep["metrics"]["CLAP_score"]["n"] == 5
    assert rep["missing"]["prompts without audio"] == ["orphan"]
    assert rep["missing"]["audio files without a prompt"] == [first]
    for key in ("CLAP_score_shuffled", "CLAP_gt_audio", "CLAP_score_reference"):
        assert key in rep["metrics"]
    assert -1.0 <= rep["metrics"]["CLAP_score"]["value"] <= 1.0


def _write_captions(path, rows):
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["ytid", "start_s", "end_s", "aspect_list", "caption",
                                                "is_audioset_eval"])
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(buffer.getvalue())


def test_musiccaps_harness(tmp_path, vggish_weights, clap_dir):
    texts = ["a calm piano piece", "fast techno with drums", "a sad violin melody", "happy guitar pop song",
             "ambient synth pad"]
    ids = ["-0Gj8-vB1q4", "0bRUkLsttto", "2unse6chkMU", "8hT2G2ew6-c", "Zz0f1Abc123"]
    _write_captions(tmp_path / "caps.csv", [
        {"ytid": i, "start_s": 30, "end_s": 40, "aspect_list": "[]", "caption": t,
         "is_audioset_eval": "True" if k != 4 else "False"} for k, (i, t) in enumerate(zip(ids, texts))])
    ref, gen = tmp_path / "ref", tmp_path / "gen"
    ref.mkdir()
    gen.mkdir()
    for k, i in enumerate(ids):
        if k != 1:  # no reference for ids[1]
            audio.write(ref / f"{i}.wav", tone(2.0, 16000, 200 + 100 * k, seed=k), 16000)
        if k != 2:  # nothing generated for ids[2]
            audio.write(gen / f"{i}.wav", tone(2.5, 24000, 210 + 100 * k, seed=10 + k), 24000)
    (gen / "corrupt-extra.wav").write_bytes(b"junk")
    out = tmp_path / "mc"
    code = cli.main(["eval", "musiccaps", "--captions", str(tmp_path / "caps.csv"), "--reference-audio", str(ref),
                     "--generated", str(gen), "--subset", "audioset_eval", "--vggish", vggish_weights,
                     "--clap", clap_dir, "--bootstrap", "0", "--out", str(out), "--no-cache"])
    assert code == 0
    rep = json.loads((out / "report.json").read_text())
    assert rep["counts"]["prompts"] == 4 and rep["counts"]["caption_rows"] == 5
    assert rep["missing"]["captions without reference audio"] == [ids[1]]
    assert rep["missing"]["captions without generated audio"] == [ids[2]]
    assert rep["missing"]["generated files not in the selected captions"] == sorted(["corrupt-extra", ids[4]])
    assert rep["preprocess"]["crop_s"] == 10.0 and rep["preprocess"]["band_rate"] == 16000
    for key in ("FAD_VGG", "FAD_CLAP", "CLAP_score", "CLAP_score_reference", "CLAP_gt_audio"):
        assert rep["metrics"][key]["value"] is not None, key
    assert rep["metrics"]["CLAP_score"]["n"] == 3  # generated ids with a caption in the subset
    assert rep["sets"]["generated (vggish)"]["used"] == 3


def _tiny_waveform_cascade(root):
    """Untrained tiny waveform-cascade checkpoints, made by the training tests' own factory."""
    import sys
    from pathlib import Path

    training_tests = Path(__file__).resolve().parents[1] / "training"
    sys.path.insert(0, str(training_tests))
    try:
        from builders import LONG, SHORT, tiny_checkpoint, write_tiny_t5
    finally:
        sys.path.remove(str(training_tests))
    t5 = write_tiny_t5(root / "t5", LONG + SHORT)
    models = root / "models"
    models.mkdir()
    (root / "work").mkdir()
    for stage in ("generator", "cascader", "sr_cascader"):
        shutil.copy(tiny_checkpoint(stage, root / "work" / f"{stage}.ckpt", f"t5:{t5}"), models / f"{stage}.ckpt")
    return models


def test_musiccaps_generates_through_the_sampling_api(tmp_path, clap_dir, capsys):
    if importlib.util.find_spec("n2m.training.sampling") is None:
        _write_captions(tmp_path / "caps.csv", [{"ytid": "a", "caption": "x", "is_audioset_eval": "True"}])
        code = cli.main(["eval", "musiccaps", "--captions", str(tmp_path / "caps.csv"), "--reference-audio",
                         str(tmp_path), "--checkpoints", "x", "--clap", "/nowhere"])
        assert code == 2 and "generation needs n2m sample (n2m.training.sampling)" in capsys.readouterr().err
        return
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: one intra-op thread is fastest on shared cores
    try:
        models = _tiny_waveform_cascade(tmp_path)
        ids = ["yt-calm", "yt-rock"]
        _write_captions(tmp_path / "caps.csv", [
            {"ytid": ids[0], "caption": "a calm piano piece with soft strings", "is_audioset_eval": "True"},
            {"ytid": ids[1], "caption": "an energetic rock song with loud drums", "is_audioset_eval": "True"}])
        ref = tmp_path / "ref"
        ref.mkdir()
        for k, i in enumerate(ids):
            audio.write(ref / f"{i}.wav", tone(10.0, 16000, 300 + 200 * k, seed=k), 16000)
        out = tmp_path / "mc"
        argv = ["eval", "musiccaps", "--captions", str(tmp_path / "caps.csv"), "--reference-audio", str(ref),
                "--checkpoints", str(models), "--generate-seconds", "12", "--steps", "2", "--clap", clap_dir,
                "--bootstrap", "0", "--out", str(out), "--no-cache"]
        assert cli.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    for i in ids:
        assert audio.info(str(out / "generated" / f"{i}.wav"))[0] == 24000
        assert json.loads((out / "generated" / f"{i}.json").read_text())["prompt_id"] == i
    rep = json.loads((out / "report.json").read_text())
    assert rep["counts"]["generated_found"] == 2 and rep["metrics"]["CLAP_score"]["n"] == 2
    assert rep["lineage"]["with_sidecar"] == 2 and rep["lineage"]["values"]["cascade"] == ["waveform"]
    assert rep["lineage"]["values"]["stages"][0]["generator"]["sha1"]
    # A re-run finds the clips and generates nothing.
    assert cli.main(argv) == 0
    assert "generated 0 clips (2 already there)" in capsys.readouterr().out


def test_bad_input_is_a_one_line_error(tmp_path, capsys, audio_sets):
    code = cli.main(["eval", "fad", "--reference", str(audio_sets["reference"]), "--generated",
                     str(audio_sets["generated"]), "--embedding", "trill:/x", "--out", str(tmp_path / "r")])
    assert code == 2 and "unknown embedding" in capsys.readouterr().err
    (tmp_path / "caps.csv").write_text("id,text\na,b\n")
    code = cli.main(["eval", "musiccaps", "--captions", str(tmp_path / "caps.csv"), "--reference-audio",
                     str(tmp_path), "--generated", str(tmp_path), "--clap", "/nowhere"])
    assert code == 2 and "lacks column" in capsys.readouterr().err


def test_compare_puts_runs_side_by_side(tmp_path, fad_run):
    other = tmp_path / "other"
    other.mkdir()
    rep = json.loads((fad_run["out"] / "report.json").read_text())
    rep["name"] = "worse"
    rep["metrics"]["FAD_VGG"]["value"] += 1.0
    (other / "report.json").write_text(json.dumps(rep))
    out = tmp_path / "cmp"
    assert cli.main(["eval", "compare", str(fad_run["out"]), str(other), "--out", str(out)]) == 0
    table = json.loads((out / "compare.json").read_text())
    assert table["best"]["FAD_VGG"] == "run"
    assert set(table["metrics"]["FAD_VGG"]) == {"run", "worse"}
    assert "<table>" in (out / "compare.html").read_text()
    assert cli.main(["eval", "compare", str(fad_run["out"]), str(tmp_path / "missing")]) == 2


def test_statistics_do_not_depend_on_file_order(fad_run, audio_sets, clap_dir):
    clap = embeddings.load(f"clap:{clap_dir}")
    files = list_audio(audio_sets["generated"])
    a = embed_files(files, clap, Preprocess(), fad_run["cache"], progress=False)
    b = embed_files(files[::-1], clap, Preprocess(), fad_run["cache"], progress=False)
    ref = frechet.stats_of(embed_files(list_audio(audio_sets["reference"]), clap, Preprocess(), fad_run["cache"],
                                       progress=False).all_frames())
    fa = frechet.frechet_distance(ref, frechet.stats_of(a.all_frames())).value
    fb = frechet.frechet_distance(ref, frechet.stats_of(b.all_frames())).value
    assert fa == pytest.approx(fb, abs=1e-9)  # on traces of order 1


@pytest.mark.parametrize("name, problem", [
    ("..", "'.' and '..' are not names"),
    (".", "it is empty"),
    (".hidden", "starts with a dot"),
    ("two\nlines", "control character"),
    ("n" * 201, "longer than 200 bytes"),
])
def test_report_names_from_out_are_checked_before_any_work(tmp_path, capsys, monkeypatch, audio_sets, name, problem):
    monkeypatch.chdir(tmp_path)
    out = name if name == "." else str(tmp_path / "reports" / name)
    sets = ["--reference", str(audio_sets["reference"]), "--generated", str(audio_sets["generated"])]
    (tmp_path / "prompts.jsonl").write_text(json.dumps({"id": "a", "text": "a tone"}) + "\n")
    commands = {
        "fad": ["eval", "fad", *sets, "--embedding", "vggish:/no/such/weights.pth", "--out", out],
        "clap-score": ["eval", "clap-score", "--audio", str(audio_sets["generated"]), "--prompts", "prompts.jsonl",
                       "--model", "/no/such/clap", "--out", out],
    }
    for argv in commands.values():
        assert cli.main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "report name" in err and problem in err, err  # not the missing model
    assert not list(tmp_path.rglob("report.json")) and not (tmp_path / "reports").exists()
