"""The ``n2m eval`` jobs as Python functions of their typed settings, without argparse: ``fad`` (n2m.eval.jobs),
``prompts`` and ``compare`` write what their command lines write; ``--quiet`` (a settings field) hides the bars."""

from __future__ import annotations

import json

import pytest

from n2m.cli import main
from n2m.errors import UserError
from n2m.eval.compare import CompareSettings, run_compare
from n2m.eval.jobs import FadSettings, run_fad
from n2m.eval.prompts import PromptsSettings, run_prompts


def _report(out) -> dict:
    report = json.loads((out / "report.json").read_text())
    report.pop("created")
    report["config"].pop("out")
    report.pop("name")
    return report


def test_fad_prompts_and_compare_from_python_write_what_the_cli_writes(tmp_path, audio_sets, vggish_weights,
                                                                     capsys):
    common = {"reference": [str(audio_sets["reference"])], "generated": [str(audio_sets["generated"])],
              "embedding": [f"vggish:{vggish_weights}"], "bootstrap": 20, "no_cache": True}
    assert run_fad(FadSettings(out=str(tmp_path / "py"), quiet=True, **common)) == 0
    quiet = capsys.readouterr()
    assert main(["eval", "fad", "--reference", str(audio_sets["reference"]), "--generated",
                 str(audio_sets["generated"]), "--embedding", f"vggish:{vggish_weights}", "--bootstrap", "20",
                 "--no-cache", "--out", str(tmp_path / "cli")]) == 0
    loud = capsys.readouterr()
    assert "file/s" in loud.err and "file/s" not in quiet.err  # the embedding bars, hidden by quiet
    python, cli = _report(tmp_path / "py"), _report(tmp_path / "cli")
    assert python["metrics"]["FAD_VGG"]["value"] == cli["metrics"]["FAD_VGG"]["value"] > 0
    assert {**python["config"], "quiet": None} == {**cli["config"], "quiet": None}

    manifest = tmp_path / "tracks.jsonl"
    manifest.write_text("".join(json.dumps({"path": str(p), "caption": f"tone {p.stem}"}) + "\n"
                                for p in sorted(audio_sets["reference"].glob("*.wav"))))
    assert run_prompts(PromptsSettings(manifest=str(manifest), out=str(tmp_path / "p.jsonl"))) == 0
    assert main(["eval", "prompts", "--manifest", str(manifest), "--out", str(tmp_path / "p_cli.jsonl")]) == 0
    assert (tmp_path / "p.jsonl").read_text() == (tmp_path / "p_cli.jsonl").read_text() != ""

    reports = [str(tmp_path / "py"), str(tmp_path / "cli")]
    capsys.readouterr()
    assert run_compare(CompareSettings(reports=reports)) == 0
    assert main(["eval", "compare", *reports]) == 0
    printed = capsys.readouterr().out
    assert printed[:len(printed) // 2] == printed[len(printed) // 2:] and "FAD_VGG" in printed


def test_eval_settings_are_checked_at_construction():
    from n2m.eval.musiccaps import MusicCapsSettings

    with pytest.raises(UserError, match="give one of --generated DIR or --checkpoints"):
        MusicCapsSettings(captions="c.csv", reference_audio="ref/")


def test_fad_is_named_the_papers_way_or_by_its_embedding():
    """Every FAD job names its metric by one rule, so a new embedding needs no entry in FAD_LABELS."""
    from n2m.eval.options import fad_label

    assert [fad_label(n) for n in ("vggish", "clap", "musicnn", "panns")] == ["FAD_VGG", "FAD_CLAP", "FAD_musicnn",
                                                                            "FAD_panns"]
