"""The 1D Efficient U-Net of Noise2Music (arXiv 2302.03917, section 3.1): Imagen's Efficient U-Net with 1D convolutions.

Layout (Imagen, arXiv 2205.11487, appendix B, figures A.28-A.30), one entry per level ``i``:

- DBlock ``i``: strided conv down (stride ``s_i``) -> ``n_i`` residual blocks -> optional self- / cross-attention.
- UBlock ``i``: concatenate the DBlock's output (one skip per level) -> ``n_i`` residual blocks -> optional attention ->
  transposed conv up (stride ``s_i``).

Every residual block takes the conditioning embedding through a combine (scale-and-bias) layer. The embedding is the
timestep embedding plus the pooled text embedding plus, for cascaders, the embedding of the conditioning-augmentation
level. Cascaders concatenate the upsampled low-fi signal with ``x_t`` at the input; an aligned conditioning sequence
(e.g. a vocoder's spectrogram) is projected and added at the bottom of the U.

``input_skip`` (n2m's addition, off in the paper preset): the output gets ``g(emb) * x_t``, a per-channel gain computed
from the conditioning embedding (zero at initialisation). Every other path from ``x_t`` to the output passes through a
group norm and a SiLU at the full rate, and a SiLU passes a signed signal linearly only through two channels (``x`` and
``-x``), so a top level as wide as its 80 mel channels cannot hand ``x_t`` through: the denoiser's prediction at moderate
noise then keeps part of the noise (EDM's ``c_skip``, Karras et al. 2022, eq. 7, adds the same path in the denoiser).
On one spectrogram window memorised in 300 steps, the error of the x0 estimate at t = 0.4 fell 10x with it. With
``input_skip_taps = K > 1`` the gain becomes a per-channel FIR filter of ``x_t`` over ``K`` frames, its taps computed from
the embedding (so from the noise level and the text): averaging a noisy spectrogram along time, channel by channel, is
how a held partial is denoised, and the small spectrogram generator learns it at once (``n2m.training.stages_spectrogram``).

Conditioning beyond captions (issue 16): a joint audio-text embedding ``[B, D]`` (MusicLM's MuLan route, Agostinelli
et al. 2023, section 3.1: the audio embedding of the training clip, the text embedding of the prompt at inference) is
projected to the cross-attention width and enters the way the text does: as cross-attention tokens after the text
tokens (``joint_tokens`` of them, each its own learnt projection of the embedding, as MusicLM conditions on 12 tokens
quantised from the one MuLan vector; one token and no text leave the attention adding one vector at every frame), and
through its own pooled path (their mean) added to the conditioning embedding. A melody (chroma frames at the
signal's rate, :mod:`n2m.melody`) is concatenated with ``x_t`` at the input, as the cascaders' low-fi signal is. The network knows nothing of noise
schedules: it maps ``(x_t, t, conditioning)`` to one output signal; the denoiser decides what that output means.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from n2m.training.networks.blocks import (
    SKIP_SCALE,
    CrossAttention,
    ResBlock,
    SelfAttention,
    TimeEmbedding,
    group_norm,
)


@dataclass
class UNetConfig:
    """Everything that defines a network (recorded in checkpoints and exports; rebuilt by :func:`UNet1D.from_config`).

    Per-level lists (``channel_mults``, ``strides``, ``num_res_blocks``, ``self_attention``, ``cross_attention``) all
    have one entry per level, shallowest first.
    """

    base_channels: int
    channel_mults: list[int]
    strides: list[int]
    num_res_blocks: list[int]
    self_attention: list[bool]
    cross_attention: list[bool]
    in_channels: int = 1  # channels of x_t
    out_channels: int = 1
    lowfi_channels: int = 0  # low-fi conditioning concatenated with x_t (cascaders)
    aligned_channels: int = 0  # aligned conditioning added at the bottom of the U (vocoder)
    aug_conditioning: bool = False  # condition on the conditioning-augmentation level
    text_dim: int = 0  # width of the text encoder's token states; 0 = no text
    joint_dim: int = 0  # width of the joint audio-text embedding (more cross-attention tokens); 0 = none
    joint_tokens: int = 1  # cross-attention tokens made from the joint embedding (learnt projections of it)
    melody_channels: int = 0  # melody (chroma) channels concatenated with x_t at the input (generators); 0 = none
    input_skip: bool = False  # a linear path from x_t to the output, gated per channel by the conditioning embedding
    input_skip_taps: int = 1  # odd: that path filters x_t over this many frames per channel (taps from the embedding)
    cond_dim: int = 512  # width the text is projected to for cross-attention
    num_heads: int = 8
    emb_mult: int = 4  # conditioning embedding width = emb_mult * base_channels
    kernel_size: int = 3
    norm_groups: int = 32
    dropout: float = 0.0
    name: str = field(default="")

    def __post_init__(self) -> None:
        depth = len(self.channel_mults)
        for key in ("strides", "num_res_blocks", "self_attention", "cross_attention"):
            if len(getattr(self, key)) != depth:
                raise ValueError(f"UNetConfig.{key} needs {depth} entries (one per level), got {getattr(self, key)}")
        if any(self.cross_attention) and self.text_dim <= 0 and self.joint_dim <= 0:
            raise ValueError("cross-attention needs text_dim > 0 or joint_dim > 0")
        if self.joint_tokens < 1:
            raise ValueError(f"UNetConfig.joint_tokens must be >= 1, got {self.joint_tokens}")
        if self.input_skip_taps < 1 or self.input_skip_taps % 2 == 0:
            raise ValueError(f"UNetConfig.input_skip_taps must be odd and >= 1, got {self.input_skip_taps}")

    @property
    def total_stride(self) -> int:
        """Input lengths are padded to a multiple of this (the product of the strides)."""
        return math.prod(self.strides)

    @property
    def emb_dim(self) -> int:
        return self.emb_mult * self.base_channels

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> UNetConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown network config keys: {sorted(unknown)}")
        return cls(**data)


class Level(nn.Module):
    """Residual blocks then optional self- and cross-attention, all at one resolution: ``[B, C_in, T]`` -> ``[B, C, T]``."""

    def __init__(self, c_in: int, channels: int, blocks: int, cfg: UNetConfig, self_attn: bool, cross_attn: bool):
        super().__init__()
        self.res = nn.ModuleList(
            ResBlock(c_in if i == 0 else channels, channels, cfg.emb_dim, cfg.kernel_size, cfg.norm_groups, cfg.dropout)
            for i in range(blocks)
        )
        self.self_attn = SelfAttention(channels, cfg.num_heads, cfg.norm_groups) if self_attn else None
        self.cross_attn = CrossAttention(channels, cfg.cond_dim, cfg.num_heads, cfg.norm_groups) if cross_attn else None

    def forward(self, h: torch.Tensor, emb: torch.Tensor, text: torch.Tensor | None, mask: torch.Tensor | None):
        for block in self.res:
            h = block(h, emb)
        if self.self_attn is not None:
            h = self.self_attn(h)
        if self.cross_attn is not None:
            h = self.cross_attn(h, text, mask)
        return h


class UNet1D(nn.Module):
    """1D Efficient U-Net. ``forward(x_t [B, C_in, T], t [B], ...) -> [B, C_out, T]`` for any ``T`` (padded inside)."""

    def __init__(self, cfg: UNetConfig):
        super().__init__()
        self.cfg = cfg
        widths = [cfg.base_channels * m for m in cfg.channel_mults]
        self.time_embedding = TimeEmbedding(cfg.base_channels, cfg.emb_dim)
        self.aug_embedding = TimeEmbedding(cfg.base_channels, cfg.emb_dim) if cfg.aug_conditioning else None
        if cfg.text_dim > 0:
            self.text_proj = nn.Sequential(nn.Linear(cfg.text_dim, cfg.cond_dim), nn.LayerNorm(cfg.cond_dim))
            self.text_pool = nn.Linear(cfg.cond_dim, cfg.emb_dim)
        if cfg.joint_dim > 0:
            self.joint_proj = nn.Sequential(nn.Linear(cfg.joint_dim, cfg.joint_tokens * cfg.cond_dim),
                                            nn.LayerNorm(cfg.cond_dim))
            self.joint_pool = nn.Linear(cfg.cond_dim, cfg.emb_dim)
        self.stem = nn.Conv1d(cfg.in_channels + cfg.lowfi_channels + cfg.melody_channels, cfg.base_channels,
                              cfg.kernel_size, padding=cfg.kernel_size // 2)

        self.downs = nn.ModuleList()
        self.down_levels = nn.ModuleList()
        previous = cfg.base_channels
        for i, width in enumerate(widths):
            self.downs.append(nn.Conv1d(previous, width, cfg.strides[i], stride=cfg.strides[i]))
            self.down_levels.append(
                Level(width, width, cfg.num_res_blocks[i], cfg, cfg.self_attention[i], cfg.cross_attention[i])
            )
            previous = width

        self.aligned_proj = (
            nn.Conv1d(cfg.aligned_channels, widths[-1], cfg.kernel_size, padding=cfg.kernel_size // 2)
            if cfg.aligned_channels > 0 else None
        )

        self.up_levels = nn.ModuleList()
        self.ups = nn.ModuleList()
        for i, width in enumerate(widths):
            below = cfg.base_channels if i == 0 else widths[i - 1]
            self.up_levels.append(
                Level(2 * width, width, cfg.num_res_blocks[i], cfg, cfg.self_attention[i], cfg.cross_attention[i])
            )
            self.ups.append(nn.ConvTranspose1d(width, below, cfg.strides[i], stride=cfg.strides[i]))

        self.head_norm = group_norm(cfg.base_channels, cfg.norm_groups)
        self.head = nn.Conv1d(cfg.base_channels, cfg.out_channels, cfg.kernel_size, padding=cfg.kernel_size // 2)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)
        self.input_gate = nn.Linear(cfg.emb_dim, cfg.out_channels * cfg.input_skip_taps) if cfg.input_skip else None
        if self.input_gate is not None:
            if cfg.out_channels != cfg.in_channels:
                raise ValueError("input_skip needs out_channels == in_channels")
            nn.init.zeros_(self.input_gate.weight)
            nn.init.zeros_(self.input_gate.bias)

    @classmethod
    def from_config(cls, cfg: UNetConfig | dict[str, Any]) -> UNet1D:
        return cls(cfg if isinstance(cfg, UNetConfig) else UNetConfig.from_dict(cfg))

    def compile_blocks(self) -> UNet1D:
        """Regional ``torch.compile``: each residual and attention block is compiled on its own (in place), so blocks of
        one shape share one compiled graph and compilation takes a fraction of a whole-network compile; the fusion of
        group norm, SiLU and the combine layer, where eager mode spends most of its time, is the same."""
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        for module in self.modules():
            if isinstance(module, (ResBlock, SelfAttention, CrossAttention)):
                module.compile()
        return self

    # -----------------------------------------------------------------------------------------------------------------

    def _embedding(self, t, text, mask, aug_t, joint, joint_mask) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                         torch.Tensor | None]:
        """Conditioning embedding ``[B, E]``, the cross-attention tokens ``[B, L', D_cond]`` (the projected text
        tokens, then the joint embedding's ``joint_tokens`` tokens) and their mask ``[B, L']`` (or None, None)."""
        emb = self.time_embedding(t)
        if self.aug_embedding is not None:
            if aug_t is None:
                raise ValueError("this network is conditioned on the augmentation level: pass aug_t [B]")
            emb = emb + self.aug_embedding(aug_t)
        tokens, masks = [], []
        if self.cfg.text_dim > 0:
            if text is None or mask is None:
                raise ValueError("this network takes text: pass text [B, L, D] and text_mask [B, L]")
            cond = self.text_proj(text)  # [B, L, D_cond]
            weights = mask.to(cond.dtype)[..., None]  # [B, L, 1]
            pooled = (cond * weights).sum(1) / weights.sum(1).clamp(min=1.0)  # masked mean, 0 with no tokens
            emb = emb + self.text_pool(pooled) * mask.any(1, keepdim=True).to(emb.dtype)
            tokens.append(cond)
            masks.append(mask)
        if self.cfg.joint_dim > 0:
            if joint is None or joint_mask is None:
                raise ValueError("this network takes a joint embedding: pass joint [B, D] and joint_mask [B]")
            project, norm = self.joint_proj
            joint_tokens = norm(project(joint).unflatten(1, (self.cfg.joint_tokens, self.cfg.cond_dim)))  # [B, J, D_c]
            emb = emb + self.joint_pool(joint_tokens.mean(1)) * joint_mask[:, None].to(emb.dtype)  # dropped: nothing
            tokens.append(joint_tokens)
            masks.append(joint_mask[:, None].expand(-1, self.cfg.joint_tokens))
        if not tokens:
            return emb, None, None
        return emb, torch.cat(tokens, dim=1), torch.cat(masks, dim=1)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        *,
        text: torch.Tensor | None = None,
        text_mask: torch.Tensor | None = None,
        lowfi: torch.Tensor | None = None,
        aug_t: torch.Tensor | None = None,
        aligned: torch.Tensor | None = None,
        joint: torch.Tensor | None = None,
        joint_mask: torch.Tensor | None = None,
        melody: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``x`` ``[B, C_in, T]``, ``t`` ``[B]`` in [0, 1]; ``text`` ``[B, L, text_dim]`` with ``text_mask`` ``[B, L]``
        (bool, True = token); ``lowfi`` ``[B, lowfi_channels, T]``; ``aug_t`` ``[B]``; ``aligned``
        ``[B, aligned_channels, T_a]`` (resampled linearly to the bottom length when it differs); ``joint``
        ``[B, joint_dim]`` with ``joint_mask`` ``[B]`` (bool, False = dropped); ``melody`` ``[B, melody_channels, T]``.
        Returns ``[B, C_out, T]``.
        """
        cfg = self.cfg
        length = x.shape[-1]
        pad = (-length) % cfg.total_stride
        if cfg.lowfi_channels > 0:
            if lowfi is None:
                raise ValueError("this network is a cascader: pass lowfi [B, C, T]")
            x = torch.cat([x, lowfi], dim=1)
        if cfg.melody_channels > 0:
            if melody is None or melody.shape[-1] != length:
                raise ValueError(f"this network takes a melody: pass melody [B, {cfg.melody_channels}, {length}]")
            x = torch.cat([x, melody.to(x.dtype)], dim=1)
        if pad:
            x = F.pad(x, (0, pad))
        emb, cond, cond_mask = self._embedding(t, text, text_mask, aug_t, joint, joint_mask)

        x_in = x[:, : cfg.in_channels]
        h0 = self.stem(x)
        h, skips = h0, []
        for down, level in zip(self.downs, self.down_levels):
            h = level(down(h), emb, cond, cond_mask)
            skips.append(h)

        if self.aligned_proj is not None:
            if aligned is None:
                raise ValueError("this network takes an aligned conditioning input: pass aligned [B, C, T_a]")
            if aligned.shape[-1] != h.shape[-1]:
                aligned = F.interpolate(aligned, size=h.shape[-1], mode="linear", align_corners=False)
            h = h + self.aligned_proj(aligned)

        for i in reversed(range(len(self.up_levels))):
            h = self.up_levels[i](torch.cat([h, skips[i]], dim=1), emb, cond, cond_mask)
            h = self.ups[i](h)
        h = (h + h0) * SKIP_SCALE
        out = self.head(F.silu(self.head_norm(h)))
        if self.input_gate is not None:
            out = out + self._filtered_input(x_in, emb)
        return out[..., :length]

    def _filtered_input(self, x_in: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """``input_skip``: ``x_t`` ``[B, C, T]`` filtered along time per channel by taps ``[B, C, K]`` computed from the
        embedding ``emb`` ``[B, E]`` (centred, zero-padded; ``K = 1``: a per-channel gain)."""
        taps = self.cfg.input_skip_taps
        b, c, length = x_in.shape
        weights = self.input_gate(emb).view(b, c, taps)  # [B, C, K]
        if taps == 1:
            return weights * x_in
        padded = F.pad(x_in, (taps // 2, taps // 2)).reshape(1, b * c, length + taps - 1)
        return F.conv1d(padded, weights.reshape(b * c, 1, taps), groups=b * c).view(b, c, length)
