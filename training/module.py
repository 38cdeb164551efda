"""One LightningModule for every diffusion stage: network + EMA, denoiser loss, optimiser, fixed-level validation.

Noise2Music (arXiv 2302.03917, section 4): Adam (0.9, 0.999), peak learning rate 1e-4 with 10k warm-up steps then a
cosine decay, EMA of the weights with decay 0.9999 (used for validation and export). The EMA decay is warmed up as
``min(decay, (1 + n) / (10 + n))`` (the usual form, e.g. ``timm.ModelEmaV2`` / the DDPM reference code) so short runs
have a usable average. Validation computes the loss of the EMA network at :data:`VAL_LEVELS` with noise seeded per clip,
so curves are comparable across runs and machines. A stage conditioned on the clips' joint audio embeddings also keeps
those of the clips it trains on (:mod:`n2m.training.joint_bank`), saved in every checkpoint for the text bridge at
sampling time; a ``text+text-embedding`` stage embeds each step's captions with the joint model instead.
"""

from __future__ import annotations

import copy
import hashlib
import math
from typing import Any

import lightning as L
import torch

from n2m.budget import TimeBudget
from n2m.errors import UserError
from n2m.provenance import now_iso, versions
from n2m.training.conditioning import joint_embedder
from n2m.training.config import TrainConfig
from n2m.training.diffusion.denoiser import Conditioning
from n2m.training.joint_bank import BankCollector, JointBank
from n2m.training.networks.presets import build_network
from n2m.training.networks.unet1d import UNetConfig
from n2m.training.stages import get_stage
from n2m.training.text import TextEncoder

VAL_LEVELS = (0.1, 0.3, 0.5, 0.7, 0.9)


def conditioning_field(cfg: UNetConfig) -> str | None:
    """The batch field holding the network's conditioning signal: ``lowfi`` (cascaders), ``aligned`` or None."""
    if cfg.lowfi_channels > 0:
        return "lowfi"
    if cfg.aligned_channels > 0:
        return "aligned"
    return None


def warmup_cosine(step: int, warmup: int, decay_steps: int, min_ratio: float) -> float:
    """Learning-rate factor: linear warm-up over ``warmup`` steps, then cosine from 1 to ``min_ratio`` at
    ``decay_steps`` (Loshchilov & Hutter 2017), constant after."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, decay_steps - warmup))
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def key_seed(key: str, salt: int = 0) -> int:
    """A stable 63-bit seed from a clip key (fixed validation noise)."""
    return int(hashlib.sha1(f"{key}:{salt}".encode()).hexdigest()[:15], 16)


class DiffusionModule(L.LightningModule):
    """Trains ``config.net`` as the denoiser of ``config.stage``. ``config`` is the resolved training config
    (:class:`n2m.training.config.TrainConfig`, or its dict as a checkpoint stores it) and travels inside every checkpoint."""

    def __init__(self, config: TrainConfig | dict[str, Any]):
        super().__init__()
        config = config if isinstance(config, TrainConfig) else TrainConfig.from_dict(config)
        self.save_hyperparameters({"config": config.to_dict()})
        self.config = config
        diffusion = config.diffusion
        self.net = build_network(config.net)
        self.ema = copy.deepcopy(self.net).requires_grad_(False)
        self.denoiser = diffusion.denoiser(self.net)
        self.ema_denoiser = diffusion.denoiser(self.ema)
        self.cond_field = conditioning_field(self.net.cfg)
        augmentation = get_stage(config.stage).augmentation
        self.augment = (augmentation(self.denoiser.schedule, diffusion.aug_t_max, diffusion.aug_blur_sigma)
                        if self.cond_field else None)
        self._text: TextEncoder | None = None
        self.bank = BankCollector() if config.conditioning.audio_joint else None
        self.budget = TimeBudget(config.trainer.max_minutes)  # started by n2m.training.callbacks.BudgetStop
        if config.optim.compile:
            self.net.compile()

    # -----------------------------------------------------------------------------------------------------------------
    # Text

    def attach_text_encoder(self, encoder: TextEncoder | None) -> None:
        """The frozen text encoder (kept out of the state dict; moved to the module's device when training starts)."""
        width = self.net.cfg.text_dim
        if width > 0 and encoder is None:
            raise UserError(f"stage {self.config.stage} needs a text encoder (--text-encoder KIND:DIR)")
        if encoder is not None and width > 0 and encoder.dim != width:
            raise UserError(f"text encoder width {encoder.dim} does not match the network's text_dim {width}")
        self._text = encoder if width > 0 else None

    def _caption_embeddings(self, texts: list[str], like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``text+text-embedding``: the joint model's text embeddings of ``texts`` ``[B, D]`` (the frozen model loaded
        once per process on this module's device, kept out of the state dict like the text encoder) and their mask
        ``[B]`` (False for an empty caption, which has no embedding: the condition is dropped there as the caption is)."""
        embedder = joint_embedder(self.config.conditioning.joint_model, self.device)
        vectors = embedder.embed_text([t if t.strip() else " " for t in texts])
        mask = torch.tensor([bool(t.strip()) for t in texts], dtype=torch.bool, device=like.device)
        return torch.from_numpy(vectors).to(like), mask

    def _place_text_encoder(self) -> None:
        if self._text is not None and self._text.device != self.device:
            self._text.to(self.device)

    def on_fit_start(self) -> None:
        self._place_text_encoder()

    def on_validation_start(self) -> None:
        self._place_text_encoder()

    # -----------------------------------------------------------------------------------------------------------------
    # Steps

    def conditioning(self, batch: dict[str, Any], augment: bool) -> Conditioning:
        """The network inputs besides ``x_t``: text states + mask, the clip's joint embedding ``[B, D]`` (all kept;
        dropout is the denoiser's), the melody ``[B, 12, T]``, and (cascaders) the augmented low-fi signal."""
        fields: dict[str, Any] = {}
        if self._text is not None:
            fields["text"], fields["text_mask"] = self._text.encode(batch["text"])
        if self.config.conditioning.text_joint:
            fields["joint"], fields["joint_mask"] = self._caption_embeddings(batch["text"], batch["x0"])
        elif self.net.cfg.joint_dim > 0:
            joint = batch["joint"]
            fields["joint"] = joint
            fields["joint_mask"] = torch.ones(joint.shape[0], dtype=torch.bool, device=joint.device)
        if self.net.cfg.melody_channels > 0:
            fields["melody"] = batch["melody"]
        if self.cond_field:
            signal = batch[self.cond_field]
            if augment:
                signal, aug_t = self.augment(signal)
            else:
                aug_t = torch.zeros(signal.shape[0], device=signal.device)
            fields[self.cond_field], fields["aug_t"] = signal, aug_t
        return Conditioning(**fields)

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        cond = self.conditioning(batch, augment=True)
        diffusion = self.config.diffusion
        loss = self.denoiser.loss(batch["x0"], cond, cfg_p=diffusion.cfg_dropout, joint_p=diffusion.audio_dropout,
                                  joint_noise=diffusion.joint_noise).mean()
        if self.bank is not None:
            self.bank.add(batch["key"], batch["joint"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["x0"].shape[0])
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = self.global_step
        decay = min(self.config.optim.ema_decay, (1.0 + step) / (10.0 + step))
        with torch.no_grad():
            ema, live = list(self.ema.parameters()), list(self.net.parameters())
            torch._foreach_lerp_(ema, live, 1.0 - decay)
            for b_ema, b_live in zip(self.ema.buffers(), self.net.buffers()):
                b_ema.copy_(b_live)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        x0 = batch["x0"]
        cond = self.conditioning(batch, augment=False)
        losses = []
        for j, level in enumerate(VAL_LEVELS):
            noise = torch.stack([
                torch.randn(x0.shape[1:], generator=torch.Generator().manual_seed(key_seed(k, j))) for k in batch["key"]
            ]).to(x0)
            t = torch.full((x0.shape[0],), level, device=x0.device)
            loss = self.ema_denoiser.loss(x0, cond, t=t, noise=noise).mean()
            self.log(f"val/loss_t{level:.1f}", loss, sync_dist=True, batch_size=x0.shape[0])
            losses.append(loss)
        self.log("val/loss", torch.stack(losses).mean(), prog_bar=True, sync_dist=True, batch_size=x0.shape[0])

    # -----------------------------------------------------------------------------------------------------------------
    # Optimisation and checkpoints

    def configure_optimizers(self):
        optim = self.config.optim
        # fused: one kernel for the whole update on CUDA (no per-parameter launches, no host syncs)
        opt = optim.make(self.net.parameters(), fused=self.device.type == "cuda")
        sched = torch.optim.lr_scheduler.LambdaLR(  # a time budget moves the schedule on as its share of decay_steps
            opt, lambda s: warmup_cosine(max(s, int(self.budget.fraction() * optim.decay_steps)), optim.warmup_steps,
                                         optim.decay_steps, optim.min_lr_ratio))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "name": "lr"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["n2m"] = {"config": self.config.to_dict(), "versions": versions(), "saved_at": now_iso(),
                             "global_step": int(self.global_step)}
        bank = self.bank.bank() if self.bank is not None else None
        if bank is not None:
            checkpoint["n2m"]["joint_bank"] = bank.state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if self.bank is not None:
            self.bank.restore(JointBank.from_state(checkpoint.get("n2m", {}).get("joint_bank")))
