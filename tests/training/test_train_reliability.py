"""n2m train / export / sample when their inputs are not what they should be (issue 14): label sets of another build,
unsafe names, data that can never form a batch, damaged shards, windows longer than the clips, numbers out of range,
weights that do not fit, and text encoders recorded relative to the working directory."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from builders import tiny_checkpoint, write_build

import n2m.training.sampling as sampling
from n2m.cli import build_parser, main
from n2m.errors import ShardDamaged, UserError
from n2m.provenance import dir_hash
from n2m.training.cascade import load_stage
from n2m.training.config import DataConfig
from n2m.training.data import ShardDataModule
from n2m.training.export import export_checkpoint, load_exported
from n2m.training.stages import STAGES

TRAIN = {"train": ("train", "n2m.training.train_cli")}


def _train(*argv: str) -> int:
    parser = build_parser(TRAIN)
    args = parser.parse_args(["train", *argv])
    return args.func(args)


def _exit(argv: list[str]) -> int:
    """The CLI's exit code: a bad flag value exits while parsing, any other user error returns 2."""
    try:
        return main(argv)
    except SystemExit as done:
        return done.code


def _one_line(capsys, job: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith(f"n2m {job}: error:"), err
    return err


@pytest.fixture(scope="module")
def small_build(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("small")
    write_build(root, {"train": [2, 2], "valid": [1]}, seconds=1.0, labels="old")
    return root


def _copy(build: Path, tmp_path: Path) -> Path:
    shutil.copytree(build, tmp_path / "b")
    return tmp_path / "b"


def _datamodule(build: Path, **options) -> ShardDataModule:
    cfg = DataConfig(build=str(build), **{"batch_size": 2, "num_workers": 0, "val_samples": 0, **options})
    return ShardDataModule(STAGES["sr_cascader"], cfg, length_multiple=16)


def test_train_refuses_a_label_set_made_from_another_build(small_build, tmp_path):
    build = _copy(small_build, tmp_path)
    argv = ["--stage", "sr_cascader", "--build", str(build), "--preset", "tiny", "--out", str(tmp_path / "run"),
            "--max-steps", "0", "--num-workers", "0"]
    record = json.loads((build / "build.json").read_text())
    (build / "build.json").write_text(json.dumps(dict(record, build_id="test-build-0002")))  # rebuilt in place
    with pytest.raises(UserError, match="made from build test-build-0001.*is build test-build-0002"):
        _train(*argv, "--labels", "old")
    with pytest.raises(UserError, match="label set 'none' not found"):
        _train(*argv, "--labels", "none")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["../../x", "..", "a/b", ".hidden", "x\0y"])
def test_train_refuses_label_names_that_leave_the_build(small_build, tmp_path, name):
    with pytest.raises(UserError, match="--labels"):
        _train("--stage", "sr_cascader", "--build", str(small_build), "--preset", "tiny",
               "--out", str(tmp_path / "run"), "--labels", name, "--dry-run")


def test_no_batch_can_form_is_an_error_not_a_hang(tmp_path, capsys):
    write_build(tmp_path, {"train": [2, 1]}, seconds=1.0, holdout=True)
    with pytest.raises(UserError, match="all 3 train clips are held out"):
        _datamodule(tmp_path, exclude_holdout=True, window_s=(0.5, 0.5)).setup()
    _datamodule(tmp_path, exclude_holdout=False, window_s=(0.5, 0.5)).setup()  # the same data without the flag
    with pytest.raises(UserError, match="batch size must be at least 1"):
        _datamodule(tmp_path, batch_size=0)
    assert _exit(["train", "--stage", "sr_cascader", "--build", str(tmp_path), "--preset", "tiny", "--out",
                  str(tmp_path / "run"), "--batch-size", "0"]) == 2
    assert "argument --batch-size: expected an integer >= 1, got '0'" in _one_line(capsys, "train")


def test_damaged_shards_are_refused_before_training_reads_them(small_build, tmp_path):
    build = _copy(small_build, tmp_path)
    shard = build / "shards" / "train" / "train-000001.tar"
    good = shard.read_bytes()
    shard.write_bytes(good[: len(good) // 2])
    with pytest.raises(ShardDamaged, match=rf"has {len(good) // 2} bytes but its marker records {len(good)}"):
        _datamodule(build).setup()
    shard.write_bytes(good[:1000] + bytes([good[1000] ^ 1]) + good[1001:])
    with pytest.raises(ShardDamaged, match="does not match the SHA-1"):
        _datamodule(build).setup()
    (build / "shards" / "valid" / "valid-000000.tar").write_bytes(b"")  # the valid split is checked too
    shard.write_bytes(good)
    with pytest.raises(ShardDamaged, match="valid-000000.tar has 0 bytes"):
        _datamodule(build).setup()


def test_a_window_longer_than_the_clips_warns_once_with_the_padding_share(small_build, caplog):
    with caplog.at_level(logging.WARNING, logger="n2m.training.data_checks"):
        _datamodule(small_build, window_s=(2.5, 2.5)).setup()
        _datamodule(small_build, window_s=(0.5, 1.0)).setup()
    warnings = [r.getMessage() for r in caplog.records if r.name == "n2m.training.data_checks"]
    # clips are 1 s: a 2.5 s window is 1 - 1/2.5 = 60% zeros; a window of at most 1 s needs no padding
    assert len(warnings) == 1 and "(2.5 s) is longer than 100% of the train clips (median 1.0 s)" in warnings[0]
    assert "60% of a window is zero padding" in warnings[0]


def test_train_numbers_out_of_range_are_one_line_errors(small_build, tmp_path, capsys):
    base = ["train", "--stage", "sr_cascader", "--build", str(small_build), "--preset", "tiny", "--out",
            str(tmp_path / "run")]
    for flag, value in [("--max-steps", "-1"), ("--lr", "nan"), ("--ema-decay", "1"), ("--cfg-dropout", "1.5"),
                        ("--val-every", "0"), ("--t-min", "1")]:
        assert _exit([*base, flag, value]) == 2
        assert f"argument {flag}" in (line := _one_line(capsys, "train")) and ": expected" in line
    assert _exit([*base, "--window", "nan"]) == 2
    assert "--window: expected a number > 0" in _one_line(capsys, "train")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(("flags", "needle"), [
    (["--steps", "0"], "--steps '0': expected an integer >= 1"),
    (["--steps", "generator=0"], "--steps 'generator=0': expected an integer >= 1"),
    (["--guidance", "nan"], "--guidance 'nan': expected a number >= 0"),
    (["--seconds", "nan"], "argument --seconds: expected a number in (0, 600]"),
    (["--seconds", "100000"], "argument --seconds: expected a number in (0, 600]"),
    (["--clip-percentile", "0"], "argument --clip-percentile: expected"),
    (["--prompts-file", "{tmp}/p.jsonl"], "prompt id 'a\\x00b' cannot name a file"),
])
def test_sample_refuses_bad_numbers_and_prompt_ids_before_any_work(tmp_path, capsys, flags, needle):
    (tmp_path / "p.jsonl").write_text(json.dumps({"id": "a\0b", "text": "calm piano"}) + "\n")
    flags = [f.format(tmp=tmp_path) for f in flags]
    prompts = [] if "--prompts-file" in flags else ["--prompts", "calm piano"]
    argv = ["sample", *prompts, "--cascade", "waveform", "--checkpoints", str(tmp_path / "no-models"),
            "--out", str(tmp_path / "out"), "--quiet", *flags]
    assert _exit(argv) == 2
    assert needle in _one_line(capsys, "sample")
    assert not (tmp_path / "out").exists()  # refused before any file or model was touched


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("export")
    ckpt = tiny_checkpoint("sr_cascader", root / "sr.ckpt", None)
    return export_checkpoint(ckpt, root / "sr_cascader")


def test_weights_that_do_not_fit_the_network_are_refused_with_their_names(export_dir, tmp_path):
    from safetensors.torch import save_file

    bad = tmp_path / "bad"
    shutil.copytree(export_dir, bad)
    save_file({"encoder.weight": torch.zeros(3), "other.bias": torch.zeros(2)}, str(bad / "model.safetensors"))
    with pytest.raises(UserError, match=r"tensors missing \(.+, \.\.\.\), 2 unexpected \(encoder.weight, other.bias\)"):
        load_exported(bad)
    (bad / "model.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(UserError, match="cannot read .*model.safetensors"):
        load_exported(bad)
    shutil.copy(export_dir / "model.safetensors", bad / "model.safetensors")
    for config in ("[1, 2, 3]", '{"architectures": ["ClapModel"], "model_type": "clap"}', "{not json"):
        (bad / "config.json").write_text(config)
        with pytest.raises(UserError, match="config.json is not"):
            load_exported(bad)
    ckpt = torch.load(export_dir.parent / "sr.ckpt", weights_only=True)
    ckpt["state_dict"] = {k.replace("ema.", "ema.x"): v for k, v in ckpt["state_dict"].items()}
    torch.save(ckpt, tmp_path / "renamed.ckpt")
    with pytest.raises(UserError, match=r"renamed.ckpt \(EMA weights\) does not hold this network's weights"):
        load_stage(tmp_path / "renamed.ckpt")


def test_the_text_encoder_is_recorded_by_absolute_path_and_hash_and_found_after_a_move(
        tiny_build, tiny_t5, tmp_path, monkeypatch):
    project = tmp_path / "project"
    shutil.copytree(tiny_t5, project / "t5")
    monkeypatch.chdir(project)
    ckpt = tiny_checkpoint("generator", project / "generator.ckpt", "t5:t5", build=tiny_build["root"])
    export_checkpoint(ckpt, project / "models" / "generator")
    config = json.loads((project / "models" / "generator" / "config.json").read_text())
    assert config["text_encoder"] == f"t5:{project / 't5'}"
    assert config["lineage"]["text_encoder_sha1"] == dir_hash(tiny_t5)

    monkeypatch.chdir(tmp_path)  # sampling from another folder
    model = load_stage(project / "models" / "generator")
    assert model.text_encoder_spec() == f"t5:{project / 't5'}"
    moved = tmp_path / "elsewhere" / "project"
    shutil.move(project, moved)  # the whole project moved: found again by content hash, near the model
    model = load_stage(moved / "models" / "generator")
    assert model.text_encoder_spec() == f"t5:{moved / 't5'}"
    states, mask = sampling.text_encoder_for(model, torch.device("cpu")).encode(["a calm piano piece"])
    assert states.shape[0] == 1 and mask.any()
    (moved / "t5" / "extra.txt").write_text("not the trained encoder any more")
    with pytest.raises(UserError, match=r"sha1 [0-9a-f]{12}\) not found.*pass --text-encoder"):
        load_stage(moved / "models" / "generator").text_encoder_spec()
