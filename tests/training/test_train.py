"""``n2m train`` / ``n2m export`` end to end through the real Lightning Trainer on the tiny build."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from n2m.cli import build_parser
from n2m.config import apply_config
from n2m.errors import UserError
from n2m.training.diffusion.denoiser import Conditioning
from n2m.training.export import load_exported
from n2m.training.module import DiffusionModule
from n2m.training.networks.presets import build_network
from n2m.training.train_cli import run_train

COMMANDS = {"train": ("train", "n2m.training.train_cli"), "export": ("export", "n2m.training.export_cli")}
STEPS = 40


def run_cli(argv: list[str]) -> int:
    parser = build_parser(COMMANDS)
    args = apply_config(parser, parser.parse_args(argv), argv)
    return args.func(args)


def train_argv(build: dict, t5: str, stage: str, out: Path, *extra: str) -> list[str]:
    return ["train", "--stage", stage, "--build", build["root"], "--labels", "tiny", "--preset", "tiny",
            "--text-encoder", f"t5:{t5}", "--out", str(out), "--window", "0.5", "--batch-size", "4",
            "--num-workers", "0", "--lr", "3e-3", "--warmup-steps", "5", "--log-every", "1", "--val-samples", "4",
            "--accelerator", "cpu", "--devices", "1", *extra]


def _metrics(run: Path) -> list[dict[str, str]]:
    with open(run / "csv" / "metrics.csv") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture(scope="module")
def runs(tiny_build, tiny_t5, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for stage in ("generator", "cascader", "sr_cascader"):
        argv = train_argv(tiny_build, tiny_t5, stage, root / stage, "--max-steps", str(STEPS), "--val-every", "20",
                          "--checkpoint-every", "20")
        assert run_cli(argv) == 0
        out[stage] = root / stage
    return out


@pytest.mark.parametrize("stage", ["generator", "cascader", "sr_cascader"])
def test_tiny_overfit_loss_falls_and_checkpoints_carry_lineage(runs, stage):
    rows = _metrics(runs[stage])
    train = [float(r["train/loss"]) for r in rows if r.get("train/loss")]
    assert len(train) == STEPS
    first, last = sum(train[:5]) / 5, sum(train[-5:]) / 5
    assert last < 0.6 * first, (first, last)
    val = [float(r["val/loss"]) for r in rows if r.get("val/loss")]
    assert len(val) == 2 and all(v == v for v in val)  # validated at steps 20 and 40
    assert {f"val/loss_t{t}" for t in ("0.1", "0.5", "0.9")} <= set(rows[0])

    ckpt = torch.load(runs[stage] / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == STEPS
    config = ckpt["n2m"]["config"]
    assert config["stage"] == stage and config["lineage"]["build_id"] == "test-build-0001"
    assert config["lineage"]["labels"] == "tiny" and len(config["lineage"]["label_manifest_sha1"]) == 40
    assert (runs[stage] / "checkpoints" / "best.ckpt").is_file() and (runs[stage] / "config.json").is_file()
    assert any((runs[stage] / "tb").rglob("events.out.tfevents.*"))


def test_dry_run_prints_config_and_parameter_count(tiny_build, tiny_t5, tmp_path, capsys):
    argv = train_argv(tiny_build, tiny_t5, "cascader", tmp_path / "dry", "--dry-run", "--net", "base_channels=8")
    assert run_cli(argv) == 0
    text = capsys.readouterr().out
    line = [ln for ln in text.splitlines() if ln.startswith("parameters: ")]
    import yaml

    config = yaml.safe_load(text.rsplit("parameters:", 1)[0])
    net = build_network(config["net"])  # a real network, counted directly
    assert net.cfg.base_channels == 8 and line == [f"parameters: {sum(p.numel() for p in net.parameters())}"]
    assert config["diffusion"]["schedule"] == "linear" and config["text_encoder"] == f"t5:{tiny_t5}"
    assert not (tmp_path / "dry").exists()


def test_user_mistakes_are_user_errors(tiny_build, tiny_t5, tmp_path):
    with pytest.raises(UserError, match="text-conditioned: pass --text-encoder"):  # a text stage without an encoder
        run_cli(["train", "--stage", "generator", "--build", tiny_build["root"], "--preset", "tiny",
                 "--out", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
    with pytest.raises(UserError):
        run_cli(train_argv(tiny_build, tiny_t5, "generator", tmp_path / "y", "--net", "colour=blue", "--dry-run"))
    with pytest.raises(UserError):
        run_cli(train_argv(tiny_build, tiny_t5, "generator", tmp_path / "z", "--resume"))
    with pytest.raises(UserError):
        run_cli(["export", str(tmp_path / "missing.ckpt"), "--out", str(tmp_path / "e")])


class Probe:
    """Records the step and optimizer state the resumed trainer starts from."""

    def __new__(cls):
        from lightning.pytorch.callbacks import Callback

        class _Probe(Callback):
            def on_train_start(self, trainer, pl_module):
                self.step = trainer.global_step
                self.optimizer = {k: {n: v.clone() if torch.is_tensor(v) else v for n, v in s.items()}
                                  for k, s in trainer.optimizers[0].state_dict()["state"].items()}
                self.lr_epoch = trainer.lr_scheduler_configs[0].scheduler.last_epoch
                self.weights = {k: v.clone() for k, v in pl_module.state_dict().items()}

        return _Probe()


def test_resume_continues_at_the_same_step_with_the_same_optimizer_state(tiny_build, tiny_t5, tmp_path):
    out = tmp_path / "resume"
    assert run_cli(train_argv(tiny_build, tiny_t5, "generator", out, "--max-steps", "4", "--val-every", "1000")) == 0
    saved = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert saved["global_step"] == 4

    parser = build_parser(COMMANDS)
    args = parser.parse_args(train_argv(tiny_build, tiny_t5, "generator", out, "--max-steps", "6", "--resume"))
    probe = Probe()
    assert run_train(args, extra_callbacks=(probe,)) == 0
    assert probe.step == 4 and probe.lr_epoch == 4
    state = saved["optimizer_states"][0]["state"]
    assert probe.optimizer.keys() == state.keys() and len(state) > 0
    for key, entry in state.items():
        for name, value in entry.items():
            assert torch.equal(probe.optimizer[key][name], value), (key, name)
    for name, value in saved["state_dict"].items():
        assert torch.equal(probe.weights[name], value), name
    assert torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["global_step"] == 6
    steps = [int(r["step"]) for r in _metrics(out) if r.get("train/loss")]
    assert steps[-2:] == [4, 5]  # the resumed run logs steps 4 and 5, after the first run's 0..3


def test_checkpoint_export_load_gives_the_same_outputs(runs, tmp_path, capsys):
    ckpt = runs["cascader"] / "checkpoints" / "last.ckpt"
    assert run_cli(["export", str(ckpt), "--out", str(tmp_path / "export")]) == 0
    assert "n2m export: cascader" in capsys.readouterr().out
    exported = load_exported(tmp_path / "export")
    saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    module = DiffusionModule(saved["n2m"]["config"])
    module.load_state_dict(saved["state_dict"])
    assert exported.stage == "cascader" and exported.config["source"]["global_step"] == STEPS
    assert exported.denoiser.schedule.name == "linear" and exported.denoiser.parametrisation == "eps"

    g = torch.Generator().manual_seed(0)
    x, t = torch.randn(2, 1, 800, generator=g), torch.rand(2, generator=g)
    cond = Conditioning(text=torch.randn(2, 5, 32, generator=g), text_mask=torch.ones(2, 5, dtype=torch.bool),
                        lowfi=torch.randn(2, 1, 800, generator=g), aug_t=torch.rand(2, generator=g))
    with torch.no_grad():
        ema_out = module.ema(x, t, **cond.kwargs())
        live_out = module.net(x, t, **cond.kwargs())
        got = exported.net(x, t, **cond.kwargs())
    assert torch.equal(got, ema_out)
    assert not torch.allclose(got, live_out)  # it is the EMA, not the live weights
    pred = exported.denoiser.predict(x, t, cond)
    assert torch.equal(pred.eps, got)


def test_lightning_notes_only_with_verbose(tiny_build, tiny_t5, tmp_path, caplog):
    """Lightning's INFO notes (GPU available, tips, 'Trainer.fit stopped') stay out of a plain run's output: n2m prints
    its own summary; ``--verbose`` (root logger at INFO, as n2m.cli sets it) brings them back."""
    import logging

    argv = train_argv(tiny_build, tiny_t5, "sr_cascader", tmp_path / "quiet", "--max-steps", "1", "--val-samples", "0")
    with caplog.at_level(logging.WARNING):
        assert run_cli(argv) == 0
    assert not any("GPU available" in r.getMessage() for r in caplog.records)
    caplog.clear()
    argv = train_argv(tiny_build, tiny_t5, "sr_cascader", tmp_path / "loud", "--max-steps", "1", "--val-samples", "0")
    with caplog.at_level(logging.INFO):
        assert run_cli(argv) == 0
    assert any("GPU available" in r.getMessage() for r in caplog.records)


def test_a_run_is_reproducible_from_its_build_and_seed(tiny_build, tiny_t5, tmp_path):
    """Two runs of one build and seed (the examples made in a loader process, as the demo's generator does) end with
    the same weights, bit for bit; another seed does not."""
    weights = {}
    for name, seed in (("first", 0), ("again", 0), ("other", 1)):
        argv = train_argv(tiny_build, tiny_t5, "spec_generator", tmp_path / name, "--max-steps", "6", "--val-every",
                          "6", "--num-workers", "1", "--seed", str(seed))
        assert run_cli(argv) == 0
        ckpt = torch.load(tmp_path / name / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
        weights[name] = ckpt["state_dict"]
    assert weights["first"].keys() == weights["again"].keys()
    assert all(torch.equal(weights["first"][k], weights["again"][k]) for k in weights["first"])
    assert not all(torch.equal(weights["first"][k], weights["other"][k]) for k in weights["first"])


def test_a_time_budget_stops_the_run_and_its_learning_rate_decays_in_full(tiny_build, tiny_t5, tmp_path, capsys):
    """``--max-minutes``: the run stops on time long before its steps, writes its last checkpoint at the step it
    reached, and its learning rate has come down to ``min_lr_ratio`` of the peak (the schedule ran on the time used)."""
    out = tmp_path / "budget"
    argv = train_argv(tiny_build, tiny_t5, "sr_cascader", out, "--max-steps", "100000", "--max-minutes", "0.1",
                      "--decay-steps", "100000", "--min-lr-ratio", "0.1", "--val-every", "100000")
    assert run_cli(argv) == 0
    line = capsys.readouterr().out
    assert "0.1-minute budget spent, of 100000 steps" in line
    ckpt = torch.load(out / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert 2 < ckpt["global_step"] < 100_000 and ckpt["n2m"]["config"]["trainer"]["max_minutes"] == 0.1
    lrs = [float(r["lr"]) for r in _metrics(out) if r.get("lr")]
    assert lrs[-1] < 0.2 * 3e-3 and lrs[-1] >= 0.1 * 3e-3 - 1e-12  # near the floor (0.1 x the peak 3e-3), not at the peak
    assert max(lrs) > 0.5 * 3e-3
