"""Network presets: one factory turns a stage's architecture and a size preset (``tiny`` | ``small`` | ``paper``) into
a UNetConfig.

The ``paper`` sizes follow Noise2Music (arXiv 2302.03917) tables 7-8: base width, depth, strides and channel multipliers
as printed. The paper does not print the residual blocks per level; n2m's choice (more blocks at coarser levels, as
Imagen's Efficient U-Net does) matches the paper's parameter counts: generator 729M (paper 724M), cascader 485M (487M),
super-resolution cascader 84M (81M), counted with a 1024-wide text encoder (the paper does not name its T5 size).

The reduced presets keep each stage's pattern (input/conditioning wiring, cross-attention at the deepest levels,
self-attention only at the bottom, where the sequence is shortest):

- ``tiny``: two levels of width 16, for CPU tests.
- ``small``: four levels (a total stride of 256 on the waveform stages), width 32 doubling per level (32, 64, 128, 256),
  two residual blocks per level: 3-7M parameters a stage, sized so that CPU minutes teach it something. Widths that
  double while the length quarters keep the cost of every level about equal (channels^2 x length), so the full-rate
  top level, where a CPU spends its time, stays thin and the short deep levels hold the parameters.

An architecture may change a preset's result for its stage (``Architecture.preset_overrides``): the paper vocoder's
base width is 128, the tiny vocoder's two strides multiply to the mel hop, the small vocoder is one level of 10 ms
patches and the small spectrogram generator is wider at its top (see ``n2m.training.stages_spectrogram``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from n2m.training.networks.unet1d import UNet1D, UNetConfig

PAPER_TEXT_DIM = 1024  # T5-large width, used to count parameters when no text encoder is given


@dataclass(frozen=True)
class Architecture:
    """A stage's network shape at paper size (per-level tuples, shallowest level first)."""

    channel_mults: tuple[int, ...]
    strides: tuple[int, ...]
    num_res_blocks: tuple[int, ...]
    self_attention: tuple[bool, ...]
    cross_attention: tuple[bool, ...]
    text: bool
    lowfi_channels: int = 0
    aligned_channels: int = 0
    in_channels: int = 1
    out_channels: int = 1
    # preset -> UNetConfig fields that differ from the factory's result for this stage, e.g. {"paper": {"base_channels": 128}}
    preset_overrides: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Size:
    """How a preset scales an architecture. ``levels``/``res_blocks``/``width_mults`` of None keep the
    architecture's own."""

    base_channels: int
    num_heads: int
    cond_dim: int
    norm_groups: int
    levels: int | None = None  # keep the first N levels (cross-attention flags from the deepest N)
    res_blocks: int | None = None
    width_mults: tuple[int, ...] | None = None  # channel multipliers of the kept levels, shallowest first


PRESETS: dict[str, Size] = {
    "paper": Size(base_channels=256, num_heads=8, cond_dim=1024, norm_groups=32),
    "small": Size(base_channels=32, num_heads=4, cond_dim=256, norm_groups=8, levels=4, res_blocks=2,
                  width_mults=(1, 2, 4, 8)),
    "tiny": Size(base_channels=16, num_heads=2, cond_dim=32, norm_groups=4, levels=2, res_blocks=1),
}

_D, _T = False, True

WAVEFORM_GENERATOR = Architecture(
    channel_mults=(1, 1, 2, 3, 4, 4), strides=(4,) * 6, num_res_blocks=(2, 4, 8, 12, 14, 14),
    self_attention=(_D, _D, _D, _T, _T, _T), cross_attention=(_D, _D, _D, _T, _T, _T), text=True,
)
WAVEFORM_CASCADER = Architecture(
    channel_mults=(1, 1, 2, 3, 4), strides=(4,) * 5, num_res_blocks=(2, 4, 8, 12, 16),
    self_attention=(_D,) * 5, cross_attention=(_D, _D, _D, _T, _T), text=True, lowfi_channels=1,
)
SUPER_RESOLUTION = Architecture(
    channel_mults=(1, 1, 2, 2), strides=(4,) * 4, num_res_blocks=(2, 4, 6, 6),
    self_attention=(_D,) * 4, cross_attention=(_D,) * 4, text=False, lowfi_channels=1,
)


def network_config(arch: Architecture, preset: str, text_dim: int | None = None, name: str = "", joint_dim: int = 0,
                   melody_channels: int = 0) -> UNetConfig:
    """The UNetConfig of ``arch`` at ``preset`` size. ``text_dim``: the text encoder's width (None: PAPER_TEXT_DIM; 0
    for a text stage conditioned on the joint embedding alone); ``joint_dim``: the joint audio-text embedding's width
    (0: none); ``melody_channels``: melody input channels (0: none)."""
    if preset not in PRESETS:
        raise KeyError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}")
    size = PRESETS[preset]
    depth = len(arch.channel_mults)
    keep = min(size.levels or depth, depth)
    if size.width_mults and len(size.width_mults) < keep:
        raise ValueError(f"preset {preset!r} gives {len(size.width_mults)} width multipliers for {keep} levels")
    blocks = [size.res_blocks or n for n in arch.num_res_blocks[:keep]]
    mults = size.width_mults[:keep] if size.width_mults else arch.channel_mults[:keep]
    cfg = UNetConfig(
        base_channels=size.base_channels,
        channel_mults=list(mults),
        strides=list(arch.strides[:keep]),
        num_res_blocks=blocks,
        # a reduced preset keeps self-attention at its bottom level only (its upper levels are long sequences)
        self_attention=([False] * (keep - 1) + [arch.self_attention[-1]]) if keep < depth else list(arch.self_attention),
        cross_attention=list(arch.cross_attention[depth - keep:]) if arch.text else [False] * keep,
        in_channels=arch.in_channels,
        out_channels=arch.out_channels,
        lowfi_channels=arch.lowfi_channels,
        aligned_channels=arch.aligned_channels,
        aug_conditioning=arch.lowfi_channels > 0 or arch.aligned_channels > 0,
        text_dim=(PAPER_TEXT_DIM if text_dim is None else text_dim) if arch.text else 0,
        joint_dim=joint_dim if arch.text else 0,
        melody_channels=melody_channels,
        cond_dim=size.cond_dim,
        num_heads=size.num_heads,
        emb_mult=4,
        norm_groups=size.norm_groups,
        name=name or preset,
    )
    overrides = arch.preset_overrides.get(preset, {})
    return dataclasses.replace(cfg, **{k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()})


def build_network(cfg: UNetConfig | dict, device: str | torch.device | None = None) -> UNet1D:
    """Instantiate a network from its config (``device="meta"`` allocates nothing)."""
    with torch.device(device or "cpu"):
        return UNet1D.from_config(cfg)


def count_parameters(cfg: UNetConfig | dict) -> int:
    """Parameter count of a config, computed on the meta device (no memory allocated)."""
    return sum(p.numel() for p in build_network(cfg, "meta").parameters())

