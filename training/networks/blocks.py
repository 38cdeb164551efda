"""Building blocks of the 1D Efficient U-Net: embeddings, the scale-and-bias combine layer, residual and attention blocks.

Imagen (Saharia et al. 2022, arXiv 2205.11487, appendix B) with its 2D convolutions replaced by 1D ones, as Noise2Music
(Huang et al. 2023, arXiv 2302.03917, section 3.1 and appendix) does. Every tensor is ``[B, C, T]`` unless noted.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

SKIP_SCALE = 1.0 / math.sqrt(2.0)  # Imagen's Efficient U-Net scales residual and skip sums by 1/sqrt(2)


def sinusoidal_embedding(t: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """Transformer-style sinusoidal features of a continuous time ``t`` ``[B]`` -> ``[B, dim]`` (DDPM, Ho et al. 2020)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = scale * t.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    """GroupNorm with at most ``groups`` groups that divide ``channels``."""
    groups = math.gcd(groups, channels)
    return nn.GroupNorm(groups, channels)


class TimeEmbedding(nn.Module):
    """t ``[B]`` -> ``[B, emb_dim]``: sinusoidal features then a two-layer MLP (Imagen's timestep embedding)."""

    def __init__(self, features: int, emb_dim: int):
        super().__init__()
        self.features = features
        self.mlp = nn.Sequential(nn.Linear(features, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(sinusoidal_embedding(t, self.features))


class Combine(nn.Module):
    """Imagen's "combine" layer: a scale and a bias per channel from the conditioning embedding (FiLM).

    ``h * (1 + scale) + bias`` with ``(scale, bias) = Linear(SiLU(emb))``, zero-initialised so it starts as identity.
    """

    def __init__(self, emb_dim: int, channels: int):
        super().__init__()
        self.proj = nn.Linear(emb_dim, 2 * channels)
        nn.init.zeros_(self.proj.weight)
        nn.init.zeros_(self.proj.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        scale, bias = self.proj(F.silu(emb)).unsqueeze(-1).chunk(2, dim=1)  # [B, C, 1] each
        return h * (1.0 + scale) + bias


class ResBlock(nn.Module):
    """Residual block: GN -> SiLU -> conv -> GN -> combine(emb) -> SiLU -> conv, plus a 1x1 shortcut; sum / sqrt(2).

    ``[B, C_in, T]`` -> ``[B, C_out, T]``. The last conv is zero-initialised (ADM, Dhariwal & Nichol 2021).
    """

    def __init__(self, c_in: int, c_out: int, emb_dim: int, kernel: int, groups: int, dropout: float = 0.0):
        super().__init__()
        self.norm1 = group_norm(c_in, groups)
        self.conv1 = nn.Conv1d(c_in, c_out, kernel, padding=kernel // 2)
        self.norm2 = group_norm(c_out, groups)
        self.combine = Combine(emb_dim, c_out)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(c_out, c_out, kernel, padding=kernel // 2)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        self.shortcut = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = F.silu(self.combine(self.norm2(h), emb))
        h = self.conv2(self.dropout(h))
        return (h + self.shortcut(x)) * SKIP_SCALE


def _heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """``[B, N, H*D]`` -> ``[B, H, N, D]``."""
    b, n, _ = x.shape
    return x.view(b, n, heads, -1).transpose(1, 2)


class SelfAttention(nn.Module):
    """Multi-head self-attention over time with a residual: ``[B, C, T]`` -> ``[B, C, T]``."""

    def __init__(self, channels: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = group_norm(channels, groups)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm(x).transpose(1, 2)  # [B, T, C]
        q, k, v = (_heads(part, self.heads) for part in self.qkv(h).chunk(3, dim=-1))
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).flatten(2)  # [B, T, C]
        return x + self.out(a).transpose(1, 2)


class CrossAttention(nn.Module):
    """Cross-attention from the signal to the text token sequence, with a padding mask (Imagen, Noise2Music 3.1).

    ``x`` ``[B, C, T]``, ``text`` ``[B, L, D_cond]``, ``mask`` ``[B, L]`` bool (True = real token). Rows with no real
    token (classifier-free-guidance dropout, or no caption) get a zero attention output, as Noise2Music zeroes the
    cross-attention output for the unconditional case.
    """

    def __init__(self, channels: int, cond_dim: int, heads: int, groups: int):
        super().__init__()
        self.heads = heads
        self.norm = group_norm(channels, groups)
        self.q = nn.Linear(channels, channels)
        self.kv = nn.Linear(cond_dim, 2 * channels)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, text: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        has_text = mask.any(dim=1)  # [B]
        safe_mask = mask | ~has_text[:, None]  # an all-masked row would give NaN; its output is zeroed below
        q = _heads(self.q(self.norm(x).transpose(1, 2)), self.heads)  # [B, H, T, D]
        k, v = (_heads(part, self.heads) for part in self.kv(text).chunk(2, dim=-1))  # [B, H, L, D]
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=safe_mask[:, None, None, :])
        a = self.out(a.transpose(1, 2).flatten(2)).transpose(1, 2)  # [B, C, T]
        return x + a * has_text[:, None, None].to(a.dtype)
