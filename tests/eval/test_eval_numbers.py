"""Issue 14 item 8 for ``n2m eval``: every number flag of every subcommand is checked (finite, in range) before any
work. A bad value is one line ``n2m eval: error: argument FLAG: expected ...`` with exit code 2, no traceback, and no
report folder; a ``--config`` YAML value gets the same check."""

from __future__ import annotations

import csv
import re

import pytest

from n2m.cli import main


def _fails_in_one_line(argv: list[str], flag: str, out, capsys) -> None:
    """``n2m ARGV`` exits 2 with one line naming ``flag`` and what it expects, and ``out`` is not created."""
    try:
        code = main(argv)
    except SystemExit as done:  # argparse's error path in n2m.config.leaf
        code = done.code
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert re.match(rf"n2m eval: error: argument {re.escape(flag)}: expected ", err), err
    assert not out.exists()


# Bad values of the options every embedding-based command shares (n2m.eval.options).
EMBEDDING = [("--crop-seconds", "nan"), ("--crop-seconds", "0"), ("--band-rate", "0"), ("--band-rate", "16000.5"),
             ("--band-rate", "100000000000"), ("--clap-min-seconds", "nan"), ("--clap-min-seconds", "-1")]
OUTPUT = [("--samples", "-3"), ("--samples", "inf"), ("--seed", "-1")]
FAD = [("--bootstrap", "-5"), ("--bootstrap", "1000000000"), ("--inf-sizes", "0"),
       ("--inf-sizes", "1"), ("--inf-sizes", "1000000000")]
BOOTSTRAP = [("--bootstrap", "-1"), ("--bootstrap", "nan"), ("--bootstrap", "1000000000")]


@pytest.mark.parametrize(("flag", "value"), EMBEDDING + OUTPUT + FAD)
def test_fad_numbers(tmp_path, capsys, audio_sets, vggish_weights, flag, value):
    out = tmp_path / "report"
    argv = ["eval", "fad", "--reference", str(audio_sets["reference"]), "--generated", str(audio_sets["generated"]),
            "--embedding", f"vggish:{vggish_weights}", "--inf", "--no-cache", "--out", str(out), flag, value]
    _fails_in_one_line(argv, flag, out, capsys)


@pytest.mark.parametrize(("flag", "value"), EMBEDDING + OUTPUT + BOOTSTRAP)
def test_clap_score_numbers(tmp_path, capsys, audio_sets, clap_dir, flag, value):
    out = tmp_path / "report"
    argv = ["eval", "clap-score", "--audio", str(audio_sets["generated"]), "--prompts", str(audio_sets["prompts"]),
            "--model", clap_dir, "--no-cache", "--out", str(out), flag, value]
    _fails_in_one_line(argv, flag, out, capsys)


@pytest.mark.parametrize(("flag", "value"), EMBEDDING + OUTPUT + BOOTSTRAP)
def test_adherence_numbers(tmp_path, capsys, audio_sets, flag, value):
    out = tmp_path / "report"
    argv = ["eval", "adherence", "--generated", str(audio_sets["generated"]), "--reference",
            str(audio_sets["reference"]), "--no-cache", "--out", str(out), flag, value]
    _fails_in_one_line(argv, flag, out, capsys)


GENERATION = [("--generate-seconds", "nan"), ("--generate-seconds", "0"), ("--generate-seconds", "100000"),
              ("--steps", "0"), ("--steps", "2.5"), ("--guidance", "nan"), ("--guidance", "-1"),
              ("--batch-size", "0")]


@pytest.mark.parametrize(("flag", "value"), GENERATION + EMBEDDING + OUTPUT + FAD)
def test_musiccaps_numbers(tmp_path, capsys, audio_sets, vggish_weights, flag, value):
    """With --checkpoints (generation into OUT/generated): the sampling numbers too, before OUT is made."""
    captions = tmp_path / "caps.csv"
    with captions.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["ytid", "caption"])
        writer.writeheader()
        writer.writerows({"ytid": p.stem, "caption": f"clip {p.stem}"} for p in audio_sets["reference"].glob("*.wav"))
    out = tmp_path / "report"
    argv = ["eval", "musiccaps", "--captions", str(captions), "--reference-audio", str(audio_sets["reference"]),
            "--checkpoints", str(tmp_path / "checkpoints"), "--vggish", vggish_weights, "--no-cache", "--out",
            str(out), flag, value]
    _fails_in_one_line(argv, flag, out, capsys)


@pytest.mark.parametrize(("flag", "value"), EMBEDDING + OUTPUT + [("--calibration-clips", "0"), ("--alpha", "nan")])
def test_memorization_numbers(tmp_path, capsys, audio_sets, flag, value):
    out = tmp_path / "report"
    argv = ["eval", "memorization", "--generated", str(audio_sets["generated"]), "--build", str(tmp_path / "build"),
            "--no-cache", "--out", str(out), flag, value]
    _fails_in_one_line(argv, flag, out, capsys)


@pytest.mark.parametrize(("flag", "value"), OUTPUT + BOOTSTRAP + [("--frame-rate", "nan")])
def test_melody_numbers(tmp_path, capsys, audio_sets, flag, value):
    out = tmp_path / "report"
    argv = ["eval", "melody", "--generated", str(audio_sets["generated"]), "--out", str(out), flag, value]
    _fails_in_one_line(argv, flag, out, capsys)


def test_config_values_get_the_same_number_checks(tmp_path, capsys, audio_sets, vggish_weights):
    (tmp_path / "fad.yaml").write_text("crop_seconds: .nan\nbootstrap: 200\n")
    out = tmp_path / "report"
    argv = ["eval", "fad", "--config", str(tmp_path / "fad.yaml"), "--reference", str(audio_sets["reference"]),
            "--generated", str(audio_sets["generated"]), "--embedding", f"vggish:{vggish_weights}", "--no-cache",
            "--out", str(out)]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"n2m eval: error: config {tmp_path / 'fad.yaml'}: crop_seconds: expected a number > 0, got 'nan'"
    assert not out.exists()


def test_musiccaps_refuses_a_bad_sampler_before_writing(tmp_path, capsys, audio_sets, vggish_weights):
    """The generation settings are resolved before OUT/generated is made (the sampler is a name, not a number, but
    it is checked at the same point)."""
    (tmp_path / "caps.csv").write_text("ytid,caption\ncalm,a calm piano piece\n")
    out = tmp_path / "report"
    argv = ["eval", "musiccaps", "--captions", str(tmp_path / "caps.csv"), "--reference-audio",
            str(audio_sets["reference"]), "--checkpoints", str(tmp_path / "checkpoints"), "--vggish", vggish_weights,
            "--sampler", "euler", "--out", str(out)]
    assert main(argv) == 2
    assert capsys.readouterr().err.strip() == ("n2m eval: error: unknown sampler 'euler'; choose from ancestral, ddim, "
                                               "dpmpp")
    assert not out.exists()
