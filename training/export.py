"""Exported models: a training checkpoint's EMA weights as safetensors + a ``config.json`` that rebuilds the network.

``DIR/model.safetensors`` holds the EMA network's tensors (the names of ``UNet1D.state_dict()``); ``DIR/config.json``
holds the network config, the diffusion config (schedule, parametrisation, weighting), the stage, the text encoder
spec, the lineage (build id, label set, text encoder hash), the checkpoint it came from (path, SHA-1, step) and the
package versions. :func:`load_exported` is the inference entry point for sampling and evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from n2m.errors import UserError
from n2m.provenance import file_hash, now_iso, read_json, versions, write_json
from training.diffusion.denoiser import Denoiser
from training.diffusion.schedules import get_schedule
from training.networks.presets import build_network
from training.networks.unet1d import UNet1D

EXPORT_FORMAT = "n2m-export"
EXPORT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"


def export_checkpoint(ckpt: str | Path, out: str | Path) -> Path:
    """Write ``out/model.safetensors`` (EMA weights) and ``out/config.json`` from a training checkpoint."""
    from safetensors.torch import save_file

    ckpt = Path(ckpt)
    try:
        data = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - an unreadable checkpoint is the user's to fix
        raise UserError(f"cannot read checkpoint {ckpt}: {err}") from err
    if "n2m" not in data or "state_dict" not in data:
        raise UserError(f"{ckpt} is not an n2m training checkpoint")
    config = data["n2m"]["config"]
    weights = {k[len("ema."):]: v.contiguous() for k, v in data["state_dict"].items() if k.startswith("ema.")}
    if not weights:
        raise UserError(f"{ckpt} holds no EMA weights")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(out / WEIGHTS), metadata={"format": EXPORT_FORMAT, "stage": config["stage"]})
    write_json(str(out / CONFIG), {
        "format": EXPORT_FORMAT,
        "version": EXPORT_VERSION,
        "stage": config["stage"],
        "preset": config["preset"],
        "spec": config["spec"],
        "net": config["net"],
        "diffusion": config["diffusion"],
        "text_encoder": config["text_encoder"],
        "lineage": config["lineage"],
        "source": {"checkpoint": str(ckpt.resolve()), "checkpoint_sha1": file_hash(ckpt),
                   "global_step": int(data.get("global_step", 0)), "ema_decay": config["optim"]["ema_decay"]},
        "training_versions": config.get("versions", {}),
        "versions": versions(("safetensors",)),
        "exported_at": now_iso(),
    })
    return out


@dataclass
class Exported:
    """A loaded export: the EMA network (eval mode, no gradients), its denoiser, and the export's config."""

    net: UNet1D
    denoiser: Denoiser
    config: dict[str, Any]

    @property
    def stage(self) -> str:
        return self.config["stage"]

    @property
    def text_encoder(self) -> str | None:
        """The ``KIND:DIR`` spec the model was trained with (None for stages without text)."""
        return self.config["text_encoder"]


def load_exported(path: str | Path, device: str | torch.device = "cpu") -> Exported:
    """Rebuild the network of an export directory from its config and load its weights (strictly)."""
    from safetensors.torch import load_file

    root = Path(path)
    if not (root / CONFIG).is_file() or not (root / WEIGHTS).is_file():
        raise UserError(f"{root} is not an n2m export (needs {CONFIG} and {WEIGHTS}; make one with 'n2m export')")
    config = read_json(str(root / CONFIG))
    if config.get("format") != EXPORT_FORMAT or int(config.get("version", 0)) > EXPORT_VERSION:
        raise UserError(f"{root / CONFIG} is not a supported n2m export (format {config.get('format')!r}, "
                        f"version {config.get('version')!r})")
    net = build_network(config["net"])
    net.load_state_dict(load_file(str(root / WEIGHTS)), strict=True)
    net = net.to(device).eval().requires_grad_(False)
    diffusion = config["diffusion"]
    denoiser = Denoiser(net, get_schedule(diffusion["schedule"]), diffusion["parametrisation"], diffusion["weighting"])
    return Exported(net=net, denoiser=denoiser, config=config)
