"""Typed configs: the on-disk format round-trips, checkpoints and exports written before them load, bad values are
one-line errors naming their key, the CLIs' choices follow the registries, and a dry run counts the paper's networks
with nothing on disk."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from n2m.cli import build_parser, main
from n2m.errors import UserError
from n2m.training.cascade import load_stage
from n2m.training.config import TrainConfig
from n2m.training.diffusion.denoiser import Conditioning
from n2m.training.diffusion.guidance import CLIPS, static_clip
from n2m.training.diffusion.samplers import SAMPLERS
from n2m.training.diffusion.schedules import SCHEDULES, LinearSchedule
from n2m.training.export import export_checkpoint, load_exported, read_checkpoint
from n2m.training.networks.presets import build_network
from n2m.training.networks.unet1d import UNetConfig
from n2m.training.sampling import stage_settings
from n2m.training.stages import STAGES

# configs as n2m train and n2m export wrote them before the typed configs (see the file's "about")
WRITTEN = json.loads((Path(__file__).parent / "fixtures" / "configs_v0.json").read_text())


def with_added_settings(config: dict) -> dict:
    """``config`` (a run's or an export's) with the settings added since it was written, at the values that keep its
    behaviour: no data scaling, no input skip (and one tap, were it on), no joint-embedding noise, every noise level
    trained, no time budget."""
    out = copy.deepcopy(config)
    out["diffusion"]["data_scale"] = 1.0
    out["net"]["input_skip"] = False
    out["net"]["input_skip_taps"] = 1
    out["net"]["joint_tokens"] = 1
    out["diffusion"]["joint_noise"] = 0.0
    out["diffusion"]["t_min"] = 0.0
    if "trainer" in out:  # a run's config (an export's has no trainer section)
        out["trainer"]["max_minutes"] = 0.0
    return out


@pytest.mark.parametrize("name", ["generator", "vocoder"])
def test_a_config_as_n2m_train_wrote_it_round_trips_unchanged(name):
    written = WRITTEN[f"run_{name}"]
    typed = TrainConfig.from_dict(copy.deepcopy(written))
    expected = with_added_settings(written)
    assert json.dumps(typed.to_dict(), sort_keys=True) == json.dumps(expected, sort_keys=True)  # values and types
    assert json.loads(json.dumps(STAGES[name].to_dict())) == written["spec"]  # the stage records itself as before
    blur = written["diffusion"]["aug_blur_sigma"]
    assert typed.diffusion.aug_blur_sigma == (tuple(blur) if blur else None) and typed.optim.betas == (0.9, 0.999)


def test_configs_written_before_the_conditioning_section_load_as_text():
    """Runs from before conditioning beyond captions (issue 16) have no ``conditioning`` section and no
    ``audio_dropout``: they read as caption-conditioned, and are written back with both."""
    older = copy.deepcopy(WRITTEN["run_generator"])
    del older["conditioning"], older["diffusion"]["audio_dropout"]
    typed = TrainConfig.from_dict(older)
    assert typed.conditioning.condition == "text" and not typed.conditioning.melody
    assert typed.diffusion.audio_dropout == 0.0
    assert typed.to_dict()["conditioning"] == WRITTEN["run_generator"]["conditioning"]


def test_checkpoints_and_exports_written_before_load(tmp_path):
    written = WRITTEN["run_vocoder"]
    torch.manual_seed(0)
    net = build_network(UNetConfig.from_dict(written["net"]))
    torch.nn.init.normal_(net.head.weight, std=0.05)
    state = {f"{part}.{k}": v for part in ("net", "ema") for k, v in net.state_dict().items()}
    torch.save({"state_dict": state, "global_step": 7, "n2m": {"config": written}}, tmp_path / "vocoder.ckpt")

    checkpoint = read_checkpoint(tmp_path / "vocoder.ckpt")
    assert checkpoint.config.to_dict() == with_added_settings(written) and checkpoint.global_step == 7
    model = load_stage(tmp_path / "vocoder.ckpt")
    assert (model.rate, model.cond_rate, model.diffusion.aug_blur_sigma) == (16000, 100, (0.2, 1.0))
    x, t = torch.randn(2, 1, 3200, generator=torch.Generator().manual_seed(1)), torch.tensor([0.3, 0.8])
    cond = Conditioning(aligned=torch.rand(2, 80, 20) * 2 - 1, aug_t=torch.zeros(2))
    with torch.no_grad():
        assert torch.equal(model.denoiser.predict(x, t, cond).eps, net(x, t, **cond.kwargs()))

    export = export_checkpoint(tmp_path / "vocoder.ckpt", tmp_path / "export")
    now, before = json.loads((export / "config.json").read_text()), with_added_settings(WRITTEN["export_vocoder"])
    assert set(now) == set(before) and set(now["source"]) == set(before["source"])
    for key in ("format", "version", "stage", "preset", "spec", "net", "diffusion", "text_encoder", "conditioning"):
        assert now[key] == before[key], key
    (tmp_path / "old").mkdir()  # the export written before, with these weights
    (tmp_path / "old" / "config.json").write_text(json.dumps(WRITTEN["export_vocoder"]))
    (tmp_path / "old" / "model.safetensors").write_bytes((export / "model.safetensors").read_bytes())
    assert load_exported(tmp_path / "old").config["source"]["global_step"] == 3


@pytest.mark.parametrize("where, value, message", [
    (("diffusion", "schedule"), "sideways", r"diffusion\.schedule: 'sideways' is not one of linear, cosine"),
    (("diffusion", "aug_blur_sigma"), [5.0, 1.0], r"diffusion\.aug_blur_sigma: low 5 is above high 1"),
    (("diffusion", "colour"), "blue", r"config section 'diffusion' has no setting 'colour'"),
    (("diffusion", "t_min"), 1.0, r"diffusion\.t_min: expected a number in \[0, 1\), got 1"),
    (("optim", "lr"), -1, r"optim\.lr: expected a number > 0, got -1"),
    (("optim", "betas"), [0.9], r"optim\.betas: expected two numbers"),
    (("optim", "optimizer"), "sgd", r"optim\.optimizer: 'sgd' is not one of adam, adamw"),
    (("data", "batch_size"), 0, r"batch size must be at least 1, got 0"),
    (("data", "window_s"), [4.0, 3.0], r"window must be 0 < min <= max seconds"),
    (("trainer", "max_steps"), -5, r"trainer\.max_steps: expected an integer >= 0"),
    (("conditioning", "condition"), "smell", r"conditioning\.condition: 'smell' is not one of text"),
    (("net", "strides"), [4], r"the network config is not valid"),
    (("stage",), "choir", r"stage: 'choir' is not one of generator"),
])
def test_a_bad_value_is_one_line_naming_its_key(where, value, message):
    config = copy.deepcopy(WRITTEN["run_generator"])
    section = config
    for key in where[:-1]:
        section = section[key]
    section[where[-1]] = value
    with pytest.raises(UserError, match=message) as err:
        TrainConfig.from_dict(config, "RUN/config.json")
    assert str(err.value).startswith("RUN/config.json: ") and "\n" not in str(err.value)


def test_a_missing_section_or_setting_is_one_line():
    incomplete = copy.deepcopy(WRITTEN["run_generator"])
    del incomplete["optim"]
    with pytest.raises(UserError, match="config: missing section 'optim'"):
        TrainConfig.from_dict(incomplete)
    del incomplete["diffusion"]["schedule"]
    incomplete["optim"] = WRITTEN["run_generator"]["optim"]
    with pytest.raises(UserError, match="config section 'diffusion' is incomplete .*'schedule'"):
        TrainConfig.from_dict(incomplete)


def test_a_registry_entry_is_a_choice_of_the_clis_and_configs(monkeypatch):
    monkeypatch.setitem(SCHEDULES, "steep", LinearSchedule)
    monkeypatch.setitem(CLIPS, "hard", lambda percentile: static_clip)
    monkeypatch.setitem(SAMPLERS, "mine", SAMPLERS["ddim"])
    commands = {"train": ("train", "n2m.training.train_cli"), "sample": ("sample", "n2m.training.sample_cli")}
    train = build_parser(commands).parse_args(["train", "--stage", "generator", "--schedule", "steep"])
    assert train.schedule == "steep"
    config = copy.deepcopy(WRITTEN["run_generator"])
    config["diffusion"]["schedule"] = "steep"
    assert TrainConfig.from_dict(config).diffusion.denoiser(torch.nn.Identity()).schedule.name == "linear"
    sample = build_parser(commands).parse_args(["sample", "--cascade", "waveform", "--checkpoints", "x", "--out", "y",
                                                "--clip", "hard"])
    assert sample.clip == "hard"
    assert stage_settings(["generator"], sampler="mine")["generator"].sampler == "mine"
    with pytest.raises(UserError, match="unknown sampler 'yours'; choose from ancestral, ddim, dpmpp, mine"):
        stage_settings(["generator"], sampler="yours")


PAPER = {"generator": 724e6, "cascader": 487e6, "sr_cascader": 81e6, "spec_generator": 745e6, "vocoder": 25.7e6}


def test_dry_run_counts_the_paper_networks_with_nothing_on_disk(tmp_path, monkeypatch, capsys):
    """``n2m train --preset paper --dry-run``: no build, no text encoder, no weights; the counts are within 4% of the
    Noise2Music paper's (tables 7-8; n2m's text stages count a 1024-wide encoder)."""
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--preset", "paper", "--dry-run"]) == 0
    counts = {}
    for line in capsys.readouterr().out.splitlines():
        name, _, rest = line.partition(": ")
        counts[name] = int(rest.split()[0].replace(",", ""))
    assert set(counts) == set(PAPER)
    for name, params in PAPER.items():
        assert abs(counts[name] - params) / params < 0.04, name
    assert main(["train", "--stage", "generator", "--preset", "paper", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"parameters: {counts['generator']} (with a 1024-wide text encoder" in out and "text_dim: 1024" in out
    assert list(tmp_path.iterdir()) == []
