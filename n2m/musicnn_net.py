"""The musicnn and VGG-style music auto-taggers of Pons & Serra, in PyTorch, inference only.

Architectures as ``musicnn/models.py`` of the ``musicnn`` 0.1.0 package (Pons & Serra, "musicnn: pre-trained
convolutional neural networks for music audio tagging", ISMIR 2019 late-breaking demo, arXiv 1909.06654; the front end
is Pons et al., "End-to-end learning for music audio tagging at scale", ISMIR 2018, arXiv 1711.02520). Every batch norm
uses its moving statistics with TensorFlow's epsilon 1e-3; dropout is the identity. TensorFlow's ``'same'`` padding of
even kernels (``pad_before = (k - 1) // 2``) is spelt out with explicit pads.

Input: log-mel patches ``[B, T, 96]`` (``T = 187`` for the released models; VGG needs exactly 187). Output: a dict with
``logits`` ``[B, tags]`` and the original's named layers in the original's layout (channels last):

- musicnn: ``timbral`` ``[B, T, 408]``, ``temporal`` ``[B, T, 153]``, ``cnn1``/``cnn2``/``cnn3`` ``[B, T, 64]``,
  ``mean_pool``/``max_pool`` ``[B, 753]`` (over time, of ``[timbral, temporal, cnn1, cnn2, cnn3]`` concatenated),
  ``penultimate`` ``[B, 200]``.
- VGG: ``pool1`` ``[B, 92, 48, 128]``, ``pool2`` ``[B, 46, 24, 128]``, ``pool3`` ``[B, 23, 12, 128]``,
  ``pool4`` ``[B, 11, 6, 128]``, ``pool5`` ``[B, 2, 1, 128]``.

:func:`convert_tf_variables` maps the variables of the original TensorFlow checkpoints to these modules' state dicts.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

TF_BN_EPS = 1e-3
MUSICNN_LAYERS = ("timbral", "temporal", "cnn1", "cnn2", "cnn3", "mean_pool", "max_pool", "penultimate")
VGG_LAYERS = ("pool1", "pool2", "pool3", "pool4", "pool5")


def _bn(channels: int, dims: int = 2) -> nn.Module:
    return (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(channels, eps=TF_BN_EPS)


def _same_pad(kernel: int) -> tuple[int, int]:
    """TensorFlow ``'same'`` padding of a stride-1 kernel: ``(before, after)``."""
    return (kernel - 1) // 2, kernel - 1 - (kernel - 1) // 2


class ConvBN(nn.Module):
    """``relu(conv(x))`` then batch norm: the original's ``conv2d(activation=relu)`` + ``batch_normalization``."""

    def __init__(self, conv: nn.Module, channels: int, dims: int = 2):
        super().__init__()
        self.conv = conv
        self.bn = _bn(channels, dims)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(F.relu(self.conv(x)))

    def max_over_last(self, x: torch.Tensor) -> torch.Tensor:
        """``forward(x).amax(-1)`` without the full-size relu and batch norm: ``[B, C, T, F]`` conv -> ``[B, C, T]``.

        relu and an inference batch norm act per element and are monotone (increasing where the norm's scale
        ``gamma / sqrt(var + eps)`` is >= 0, decreasing where it is negative), so the max over F of their output is
        their output at the max over F of the conv (at the min, for a negative scale): the same float values.
        """
        lo, hi = torch.aminmax(self.conv(x), dim=-1)  # [B, C, T] each
        bn = self.bn
        increasing = (bn.weight * torch.rsqrt(bn.running_var + bn.eps) >= 0)[:, None]
        return F.batch_norm(F.relu(torch.where(increasing, hi, lo)), bn.running_mean, bn.running_var, bn.weight,
                            bn.bias, False, 0.0, bn.eps)


class MusicnnNet(nn.Module):
    """musicnn (``build_musicnn``): musically motivated front end, dense mid-end, temporal-pooling back end."""

    layers = MUSICNN_LAYERS

    def __init__(self, n_mels: int = 96, num_classes: int = 50, num_filt_midend: int = 64,
                 num_units_backend: int = 200):
        super().__init__()
        timbral, temporal = int(1.6 * 128), int(1.6 * 32)  # num_filt=1.6 in build_musicnn
        self.bn_input = _bn(1)
        self.timbral74 = ConvBN(nn.Conv2d(1, timbral, (7, int(0.4 * n_mels))), timbral)
        self.timbral77 = ConvBN(nn.Conv2d(1, timbral, (7, int(0.7 * n_mels))), timbral)
        self.temporal = nn.ModuleList(ConvBN(nn.Conv2d(1, temporal, (k, 1)), temporal) for k in (128, 64, 32))
        front = 2 * timbral + 3 * temporal
        self.mid = nn.ModuleList(
            ConvBN(nn.Conv1d(c, num_filt_midend, 7), num_filt_midend, dims=1) for c in (front, num_filt_midend,
                                                                                       num_filt_midend)
        )
        pooled = front + 3 * num_filt_midend
        self.pool_bn = _bn(2 * pooled, dims=1)
        self.dense = nn.Linear(2 * pooled, num_units_backend)
        self.dense_bn = _bn(num_units_backend, dims=1)
        self.out = nn.Linear(num_units_backend, num_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Patches ``[B, T, mels]`` -> ``logits`` and the named layers (module docstring)."""
        x = self.bn_input(x.unsqueeze(1))  # [B, 1, T, mels]
        padded = F.pad(x, (0, 0, 3, 3))  # time only; frequency is max-pooled whole afterwards
        timbral = [block.max_over_last(padded) for block in (self.timbral74, self.timbral77)]  # [B, 204, T] each
        temporal = [block.max_over_last(F.pad(x, (0, 0, *_same_pad(block.conv.kernel_size[0]))))
                    for block in self.temporal]  # [B, 51, T] each
        front = torch.cat(timbral + temporal, dim=1)  # [B, 561, T]
        cnn1 = self.mid[0](F.pad(front, (3, 3)))
        cnn2 = self.mid[1](F.pad(cnn1, (3, 3))) + cnn1
        cnn3 = self.mid[2](F.pad(cnn2, (3, 3))) + cnn2
        features = torch.cat([front, cnn1, cnn2, cnn3], dim=1)  # [B, 753, T]
        max_pool, mean_pool = features.amax(dim=2), features.mean(dim=2)
        pooled = torch.stack([max_pool, mean_pool], dim=2).flatten(1)  # TF flattens [B, 753, 2]: max and mean interleave
        penultimate = self.dense_bn(F.relu(self.dense(self.pool_bn(pooled))))
        return {
            "logits": self.out(penultimate),
            "timbral": torch.cat(timbral, dim=1).transpose(1, 2),
            "temporal": torch.cat(temporal, dim=1).transpose(1, 2),
            "cnn1": cnn1.transpose(1, 2), "cnn2": cnn2.transpose(1, 2), "cnn3": cnn3.transpose(1, 2),
            "mean_pool": mean_pool, "max_pool": max_pool, "penultimate": penultimate,
        }


class VggNet(nn.Module):
    """The VGG-style baseline (``vgg``): five 3x3 conv + batch norm + max-pool blocks, then one dense layer."""

    layers = VGG_LAYERS
    POOLS = (((4, 1), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((2, 2), (2, 2)), ((4, 4), (4, 4)))

    def __init__(self, num_classes: int = 50, num_filters: int = 128, n_mels: int = 96, n_frames: int = 187):
        super().__init__()
        self.bn_input = _bn(1)
        self.convs = nn.ModuleList(
            ConvBN(nn.Conv2d(1 if i == 0 else num_filters, num_filters, 3, padding=1), num_filters) for i in range(5)
        )
        t, f = n_frames, n_mels
        for (kt, kf), (st, sf) in self.POOLS:
            t, f = (t - kt) // st + 1, (f - kf) // sf + 1
        self.out = nn.Linear(t * f * num_filters, num_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Patches ``[B, T, mels]`` -> ``logits`` and ``pool1..pool5`` (channels last, as TensorFlow's NHWC)."""
        x = self.bn_input(x.unsqueeze(1))  # [B, 1, T, mels]
        out = {}
        for i, (conv, (kernel, stride)) in enumerate(zip(self.convs, self.POOLS), start=1):
            x = F.max_pool2d(conv(x), kernel, stride)  # [B, C, T', F']
            out[f"pool{i}"] = x.permute(0, 2, 3, 1)
        out["logits"] = self.out(out["pool5"].flatten(1))
        return {"logits": out.pop("logits"), **out}


ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {"musicnn": MusicnnNet, "vgg": VggNet}


# ---------------------------------------------------------------------------------------------------------------------
# TensorFlow checkpoint -> state dict


def _tf_names(architecture: str) -> dict[str, str]:
    """Our module prefix -> the original's variable scope, in the order ``tf.compat.v1.layers`` numbered them."""
    if architecture == "musicnn":
        blocks = ["timbral74", "timbral77", "temporal.0", "temporal.1", "temporal.2", "mid.0", "mid.1", "mid.2"]
        names = {"bn_input": "batch_normalization"}
        for i, block in enumerate(blocks):
            names[f"{block}.conv"] = "conv2d" if i == 0 else f"conv2d_{i}"
            names[f"{block}.bn"] = f"batch_normalization_{i + 1}"
        names.update({"pool_bn": "batch_normalization_9", "dense": "dense", "dense_bn": "batch_normalization_10",
                      "out": "dense_1"})
        return names
    names = {"bn_input": "batch_normalization", "out": "dense"}
    for i in range(5):
        names[f"convs.{i}.conv"] = f"{i + 1}CNN"
        names[f"convs.{i}.bn"] = f"batch_normalization_{i + 1}"
    return names


def _convert(weight: np.ndarray, target: torch.Tensor) -> np.ndarray:
    """A TensorFlow kernel -> PyTorch layout: conv ``[kh, kw, in, out]`` -> ``[out, in, kh, kw]`` (or ``[out, in, kh]``
    for the mid-end, whose ``[7, C, 1, out]`` kernels span the whole feature axis); dense ``[in, out]`` -> ``[out, in]``.
    """
    if weight.ndim == 2:
        out = weight.T
    elif target.ndim == 3:
        out = weight[:, :, 0, :].transpose(2, 1, 0)
    else:
        out = weight.transpose(3, 2, 0, 1)
    return np.ascontiguousarray(out, dtype=np.float32)


def convert_tf_variables(variables: dict[str, np.ndarray], architecture: str, **kwargs) -> dict[str, np.ndarray]:
    """The original checkpoint's variables (name -> array) -> this module's state dict (name -> float32 array).

    Optimizer slots (``*/Adam*``, ``beta*_power``) are dropped; any other variable left unused, a missing one or a
    shape mismatch raises ``ValueError``.
    """
    net = ARCHITECTURES[architecture](**kwargs)
    suffixes = {"weight": ("kernel", "gamma"), "bias": ("bias", "beta"), "running_mean": ("moving_mean",),
                "running_var": ("moving_variance",)}
    scopes = _tf_names(architecture)
    state: dict[str, np.ndarray] = {}
    used = set()
    for key, target in net.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        prefix, _, param = key.rpartition(".")
        candidates = [f"{scopes[prefix]}/{suffix}" for suffix in suffixes[param]]
        name = next((c for c in candidates if c in variables), None)
        if name is None:
            raise ValueError(f"checkpoint has none of {candidates} (for {key})")
        value = _convert(variables[name], target) if name.endswith("kernel") else variables[name].astype(np.float32)
        if tuple(value.shape) != tuple(target.shape):
            raise ValueError(f"{name} has shape {value.shape}, {key} needs {tuple(target.shape)}")
        state[key] = value
        used.add(name)
    left = sorted(n for n in variables if n not in used and "Adam" not in n and not n.endswith("_power"))
    if left:
        raise ValueError(f"checkpoint variables not used by the {architecture} network: {left[:5]}")
    return state
