"""Issue 14 item 8 for ``n2m clap convert``: every number flag is checked before any work. A value out of range is a
one-line error at parse time; settings the checkpoint cannot use (a mel band above Nyquist, a spectrogram the HTSAT
tower cannot take) are one-line errors before ``--out`` is written; a ``--config`` YAML value gets the same check."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from test_clap_convert import _save
from test_clap_convert import original as micro_laion  # noqa: F401  (registers that module's fixture here)

from n2m.cli import main

# The settings test_clap_convert's CLI test converts the micro checkpoint with (LAION's hop 480 and n_fft 1024).
GOOD = ["--sample-rate", "16000", "--fmax", "8000", "--spec-size", "128"]


@pytest.fixture()
def convert(request, tmp_path) -> Callable[..., int]:
    """``convert(*flags)``: the exit code of ``n2m clap convert`` of the micro LAION checkpoint into ``tmp_path/out``
    with GOOD and then ``flags`` (the last value of a flag wins)."""
    checkpoint = request.getfixturevalue("micro_laion")
    ckpt = _save(tmp_path / "clap.pt", checkpoint["laion"])

    def run(*flags: str) -> int:
        argv = ["clap", "convert", ckpt, "--text-model", str(checkpoint["root"] / "roberta"), "--out",
                str(tmp_path / "out"), *GOOD, *flags]
        try:
            return main(argv)
        except SystemExit as done:  # argparse's error path in n2m.config.leaf
            return done.code

    return run


@pytest.mark.parametrize(("flag", "value"), [
    ("--sample-rate", "0"), ("--sample-rate", "16000.5"), ("--sample-rate", "100000000000"), ("--fmin", "nan"),
    ("--fmin", "-1"), ("--fmax", "inf"), ("--fmax", "0"), ("--spec-size", "0"), ("--spec-size", "nan"),
])
def test_convert_numbers_out_of_range(convert, tmp_path, capsys, flag, value):
    code = convert(flag, value)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert re.match(rf"n2m clap: error: argument {flag}: expected ", err), err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("flags", "message"), [
    (["--fmin", "8000"], "--fmin 8000 Hz must be below --fmax 8000 Hz"),
    (["--fmax", "12000"], "--fmax 12000 Hz is above the Nyquist frequency of --sample-rate 16000 (8000 Hz)"),
    # 10 s at 16 kHz with hop 480: 334 frames x 32 mel bins; HTSAT of spec size S takes S * (S // 32) frames.
    (["--spec-size", "64"], "a 10 s window at --sample-rate 16000 is a 334 x 32 spectrogram, which the audio tower of "
                            "--spec-size 64 cannot take"),
    (["--spec-size", "16"], "a 10 s window at --sample-rate 16000 is a 334 x 32 spectrogram, which the audio tower of "
                            "--spec-size 16 cannot take"),
    (["--sample-rate", "48000", "--fmax", "14000"], "a 10 s window at --sample-rate 48000 is a 1001 x 32 spectrogram, "
                                                    "which the audio tower of --spec-size 128 cannot take"),
])
def test_convert_settings_the_checkpoint_cannot_use(convert, tmp_path, capsys, flags, message):
    code = convert(*flags)
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith(f"n2m clap: error: {message}"), err
    assert not (tmp_path / "out").exists()


def test_convert_config_values_get_the_same_number_checks(convert, tmp_path, capsys):
    (tmp_path / "convert.yaml").write_text("spec_size: 128\nfmax: .inf\n")
    assert convert("--config", str(tmp_path / "convert.yaml")) == 2
    assert capsys.readouterr().err.strip() == (f"n2m clap: error: config {tmp_path / 'convert.yaml'}: fmax: expected "
                                               "a number > 0, got 'inf'")
    assert not (tmp_path / "out").exists()
