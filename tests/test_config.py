"""YAML configs go through the same checks as flags (n2m.config.apply_config); numeric flag types refuse NaN,
infinities and values out of range; bad flags are one-line errors."""

from __future__ import annotations

import argparse
import math

import pytest

from n2m.cli import build_parser, main
from n2m.config import FRACTION, NONNEGATIVE_INT, POSITIVE, apply_config, number
from n2m.errors import UserError

TRAIN = {"train": ("train", "n2m.training.train_cli")}


def _parse(tmp_path, yaml_text: str, *flags: str) -> argparse.Namespace:
    config = tmp_path / "run.yaml"
    config.write_text(yaml_text)
    parser = build_parser(TRAIN)
    argv = ["train", "--config", str(config), *flags]
    return apply_config(parser, parser.parse_args(argv), argv)


def test_config_values_get_the_flags_types_and_choices(tmp_path):
    args = _parse(tmp_path, "preset: tiny\nbatch_size: 4\nlr: 1e-3\nwindow: 1.5\ncompile: true\n"
                            "net: ['base_channels=8', 'strides=[4, 4]']\nmax-steps: 0\n", "--batch-size", "6")
    assert (args.preset, args.batch_size, args.lr, args.window, args.compile) == ("tiny", 6, 1e-3, "1.5", True)
    assert args.net == ["base_channels=8", "strides=[4, 4]"] and args.max_steps == 0
    assert isinstance(args.lr, float) and isinstance(args.max_steps, int)


@pytest.mark.parametrize(("yaml_text", "needle"), [
    ("preset: huge\n", "preset: invalid choice 'huge'"),
    ("batch_size: 2.5\n", "batch_size: expected an integer >= 1, got '2.5'"),
    ("batch_size: 0\n", "expected an integer >= 1"),
    ("lr: .nan\n", "lr: expected a number > 0"),
    ("max_steps: -1\n", "max_steps: expected an integer >= 0"),
    ("compile: 1\n", "compile: takes true or false"),
    ("stage: [generator]\n", "stage: takes a single value"),
    ("presets: tiny\n", "unknown option 'presets'"),
])
def test_bad_config_values_are_one_line_errors(tmp_path, yaml_text, needle):
    with pytest.raises(UserError, match=needle.replace(".", r"\.").replace("[", r"\[").replace("(", r"\(")):
        _parse(tmp_path, yaml_text, "--dry-run")


def test_dry_run_refuses_a_config_value_of_the_wrong_type(tmp_path, capsys):
    config = tmp_path / "run.yaml"
    config.write_text("stage: generator\npreset: tiny\nbatch_size: 2.5\n")
    code = main(["train", "--config", str(config), "--build", str(tmp_path), "--out", str(tmp_path / "r"),
                 "--dry-run"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "batch_size: expected an integer >= 1" in err


def test_number_types_refuse_nan_infinity_and_out_of_range_values():
    assert POSITIVE("0.5") == 0.5 and NONNEGATIVE_INT("0") == 0 and FRACTION("1") == 1.0
    for parse, value in [(POSITIVE, "0"), (POSITIVE, "nan"), (POSITIVE, "inf"), (POSITIVE, "-1e-9"),
                         (NONNEGATIVE_INT, "-1"), (NONNEGATIVE_INT, "2.5"), (NONNEGATIVE_INT, "nan"),
                         (FRACTION, "1.0000001"), (number(float, 0, 1, high_open=True), "1"), (POSITIVE, True)]:
        with pytest.raises(argparse.ArgumentTypeError, match="expected"):
            parse(value)
    assert number(int, low=2)(3.0) == 3 and math.isclose(number(float, high=600)("600"), 600.0)


def test_bad_flags_are_one_line_errors_without_the_usage_block(capsys):
    with pytest.raises(SystemExit) as done:
        main(["train", "--preset", "huge"])
    err = capsys.readouterr().err.strip()
    assert done.value.code == 2 and len(err.splitlines()) == 1
    assert err.startswith("n2m train: error: argument --preset: invalid choice: 'huge'")
