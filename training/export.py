"""Model files: ``n2m train`` checkpoints and ``n2m export`` directories, read into models, and exports written.

- A training checkpoint (Lightning's ``.ckpt``) holds the run's config (``n2m.config``, a
  :class:`n2m.training.config.TrainConfig`), the live (``net.*``) and EMA (``ema.*``) weights, the step and, for a
  joint-embedding stage, its bank of training clips' audio embeddings (``n2m.joint_bank``).
  :func:`read_checkpoint` is the one reader (``weights_only=True``: no pickled code runs; the config validated once).
- An export: ``DIR/model.safetensors`` holds the EMA network's tensors (the names of ``UNet1D.state_dict()``);
  ``DIR/config.json`` holds the network config, the diffusion config (schedule, parametrisation, weighting), the stage,
  the text encoder spec, the conditioning (:mod:`n2m.training.conditioning`: joint model and melody), the lineage (build
  id, label set, text encoder hash), the checkpoint it came from (path, SHA-1, step) and the package versions;
  a joint-embedding stage's ``DIR/joint_bank.safetensors`` holds its bank (:mod:`n2m.training.joint_bank`).

:func:`load_checkpoint` (a checkpoint's EMA weights) and :func:`load_exported` (an export) give the same
:class:`Exported` through :func:`build_model`, the one place a stage's network and denoiser are rebuilt from a config;
they are the inference entry points for sampling and evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from n2m.errors import UserError
from n2m.provenance import file_hash, now_iso, versions
from n2m.storage import read_json, write_json
from n2m.training.config import DiffusionConfig, TrainConfig, network_config
from n2m.training.diffusion.denoiser import Denoiser
from n2m.training.joint_bank import JointBank
from n2m.training.networks.presets import build_network
from n2m.training.networks.unet1d import UNet1D

EXPORT_FORMAT = "n2m-export"
EXPORT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


@dataclass(frozen=True)
class Checkpoint:
    """A read training checkpoint: its validated config, its weights (``net.*`` live, ``ema.*`` EMA), its step and its
    joint bank (None for stages without a joint embedding)."""

    path: Path
    config: TrainConfig
    state_dict: dict[str, torch.Tensor]
    global_step: int
    joint_bank: JointBank | None = None

    def ema_weights(self) -> dict[str, torch.Tensor]:
        """The EMA network's tensors, named as ``UNet1D.state_dict()`` names them."""
        weights = {k[len("ema."):]: v for k, v in self.state_dict.items() if k.startswith("ema.")}
        if not weights:
            raise UserError(f"{self.path} holds no EMA weights")
        return weights


def read_checkpoint(path: str | Path) -> Checkpoint:
    """An ``n2m train`` checkpoint, loaded with ``weights_only=True``; an unreadable file, another kind of file or an
    invalid config is a one-line :class:`UserError`."""
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - an unreadable checkpoint is the user's to fix
        raise UserError(f"cannot read checkpoint {path}: {err}") from err
    if not isinstance(data, dict) or "n2m" not in data or "state_dict" not in data:
        raise UserError(f"{path} is not an n2m training checkpoint")
    return Checkpoint(path, TrainConfig.from_dict(data["n2m"]["config"], str(path)), data["state_dict"],
                      int(data.get("global_step", 0)), JointBank.from_state(data["n2m"].get("joint_bank")))


def export_checkpoint(ckpt: str | Path, out: str | Path) -> Path:
    """Write ``out/model.safetensors`` (EMA weights) and ``out/config.json`` from a training checkpoint."""
    from safetensors.torch import save_file

    checkpoint = read_checkpoint(ckpt)
    weights = {k: v.contiguous() for k, v in checkpoint.ema_weights().items()}
    config = checkpoint.config
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out / WEIGHTS), metadata={"format": EXPORT_FORMAT, "stage": config.stage})
    write_json(str(out / CONFIG), {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "stage": config.stage,
        "preset": config.preset,
        "spec": config.spec,
        "net": config.net.to_dict(),
        "diffusion": config.diffusion.to_dict(),
        "text_encoder": config.text_encoder,
        "conditioning": config.conditioning.to_dict(),
        "lineage": config.lineage,
        "source": {"checkpoint": str(checkpoint.path.resolve()), "checkpoint_sha1": file_hash(checkpoint.path),
                   "global_step": checkpoint.global_step, "ema_decay": config.optim.ema_decay},
        "training_versions": config.versions,
        "versions": versions(("safetensors",)),
        "exported_at": now_iso(),
    })
    if checkpoint.joint_bank is not None:
        checkpoint.joint_bank.save(out)
    return out


@dataclass
class Exported:
    """A loaded stage model: the EMA network (eval mode, no gradients), its denoiser, its diffusion settings, the
    config it was rebuilt from (an export's, or a checkpoint's with its ``source``) and a joint-embedding stage's bank.
    A classical stage (nothing trained, :mod:`n2m.training.griffin_lim`) has no denoiser and no diffusion settings."""

    net: UNet1D
    denoiser: Denoiser | None
    config: dict[str, Any]
    diffusion: DiffusionConfig | None
    joint_bank: JointBank | None = None

    @property
    def stage(self) -> str:
        return self.config["stage"]

    @property
    def text_encoder(self) -> str | None:
        """The ``KIND:DIR`` spec the model was trained with (None for stages without text)."""
        return self.config["text_encoder"]


def load_weights(net: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``net`` only if it fits exactly: a missing, unexpected or wrongly shaped tensor is a one-line
    :class:`UserError` naming the first few (so a file of other weights never leaves a network half random)."""
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if missing or unexpected:
        raise UserError(f"{source} does not hold this network's weights: {len(missing)} of {len(expected)} tensors "
                        f"missing{_first(missing)}, {len(unexpected)} unexpected{_first(unexpected)}")
    wrong = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items()
             if tuple(state[k].shape) != tuple(v.shape)]
    if wrong:
        raise UserError(f"{source}: {len(wrong)} tensors have the wrong shape{_first(wrong)}")
    net.load_state_dict(state, strict=True)


def _first(names: list[str], count: int = 3) -> str:
    return f" ({', '.join(names[:count])}{', ...' if len(names) > count else ''})" if names else ""


def build_model(config: dict[str, Any], weights: dict[str, torch.Tensor], source: str,
                device: str | torch.device = "cpu") -> Exported:
    """The stage model of a config's ``net`` and ``diffusion`` sections with ``weights`` loaded strictly
    (:func:`load_weights`), on ``device`` in eval mode; ``source`` names the file in every error line."""
    try:
        net = build_network(network_config(config["net"]))
        diffusion = DiffusionConfig.from_dict(config["diffusion"])
    except UserError as err:
        raise UserError(f"{source}: {err}") from None
    load_weights(net, weights, source)
    net = net.to(device).eval().requires_grad_(False)
    return Exported(net=net, denoiser=diffusion.denoiser(net), config=config, diffusion=diffusion)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> Exported:
    """The EMA network of an ``n2m train`` checkpoint; its config gains ``source`` (the file and the step)."""
    checkpoint = read_checkpoint(path)
    config = {**checkpoint.config.to_dict(),
              "source": {"checkpoint": str(checkpoint.path), "global_step": checkpoint.global_step}}
    model = build_model(config, checkpoint.ema_weights(), f"{checkpoint.path} (EMA weights)", device)
    model.joint_bank = checkpoint.joint_bank
    return model


def load_exported(path: str | Path, device: str | torch.device = "cpu") -> Exported:
    """Rebuild the network of an export directory from its config and load its weights (strictly)."""
    from safetensors.torch import load_file

    root = Path(path)
    if not (root / CONFIG).is_file() or not (root / WEIGHTS).is_file():
        raise UserError(f"{root} is not an n2m export (needs {CONFIG} and {WEIGHTS}; make one with 'n2m export')")
    try:
        config = read_json(str(root / CONFIG))
    except (OSError, ValueError) as err:
        raise UserError(f"{root / CONFIG} is not readable JSON ({err})") from err
    if not isinstance(config, dict) or config.get("format") != EXPORT_FORMAT:
        kind = config.get("format") if isinstance(config, dict) else type(config).__name__
        raise UserError(f"{root / CONFIG} is not an n2m export config (format {kind!r}, expected {EXPORT_FORMAT!r})")
    missing = [k for k in ("version", "stage", "spec", "net", "diffusion") if k not in config]
    if missing or not str(config["version"]).isdigit() or int(config["version"]) > EXPORT_VERSION:
        raise UserError(f"{root / CONFIG} is not a supported n2m export (version {config.get('version')!r}"
                        f"{', missing ' + ', '.join(missing) if missing else ''})")
    try:
        state = load_file(str(root / WEIGHTS))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error type for any damaged file
        raise UserError(f"cannot read {root / WEIGHTS}: {str(err).strip() or type(err).__name__}") from err
    model = build_model(config, state, str(root / WEIGHTS), device)
    model.joint_bank = JointBank.load(root)
    return model
