"""Exported models: a training checkpoint's EMA weights as safetensors + a ``config.json`` that rebuilds the network.

``DIR/model.safetensors`` holds the EMA network's tensors (the names of ``UNet1D.state_dict()``); ``DIR/config.json``
holds the network config, the diffusion config (schedule, parametrisation, weighting), the stage, the text encoder
spec, the conditioning (:mod:`training.conditioning`: joint model and melody), the lineage (build id, label set, text encoder hash), the checkpoint it came from (path, SHA-1, step) and the
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
        "conditioning": config.get("conditioning"),
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


def network_from_config(config: dict[str, Any], source: str) -> UNet1D:
    """The (random) network of a stage config, with a one-line error for a config that does not describe one."""
    try:
        return build_network(config["net"])
    except (KeyError, TypeError, ValueError) as err:
        raise UserError(f"{source}: the network config is not valid ({err})") from err


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
    net = network_from_config(config, str(root / CONFIG))
    try:
        state = load_file(str(root / WEIGHTS))
    except Exception as err:  # noqa: BLE001 - safetensors raises its own error type for any damaged file
        raise UserError(f"cannot read {root / WEIGHTS}: {str(err).strip() or type(err).__name__}") from err
    load_weights(net, state, str(root / WEIGHTS))
    net = net.to(device).eval().requires_grad_(False)
    diffusion = config["diffusion"]
    denoiser = Denoiser(net, get_schedule(diffusion["schedule"]), diffusion["parametrisation"], diffusion["weighting"])
    return Exported(net=net, denoiser=denoiser, config=config)
