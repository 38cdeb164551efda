"""The bank of a joint-embedding stage: the joint model's audio embeddings of the clips it trained on, and the text
bridge that uses them at sampling time.

Why a bridge: a stage trained with ``--condition audio-embedding`` learnt the region of the joint space where *audio*
embeddings lie; a joint model's text embeddings lie elsewhere (the modality gap, Liang et al. 2022, arXiv 2203.02053:
each tower maps into its own narrow cone). MusicLM feeds the text embedding in the audio embedding's place and relies
on MuLan's alignment; with a joint model trained on a few thousand pairs the gap is wide and the generator meets a vector
unlike any it trained on. kNN-Diffusion (Sheynin et al. 2022, arXiv 2204.02849, section 3) trains on image embeddings
alone and, at inference, conditions on the image embeddings nearest the text's in an index of the training set. n2m
does the same: the stage keeps its training clips' audio embeddings (:class:`BankCollector` while training, the
checkpoint's ``n2m.joint_bank``, an export's ``joint_bank.safetensors``) and a text prompt is replaced by the unit-norm
mean of its ``k`` nearest clips' embeddings by cosine (:meth:`JointBank.nearest`; ``n2m sample --text-bridge``).

The bank is a bottom-k sketch of the clips seen: at most :data:`MAX_BANK` clips, those whose key hashes lowest, so it is
a uniform sample of the training clips that depends on neither the order of the batches nor a resume. Under
data-parallel training each rank keeps the clips it saw, and rank 0's bank is saved (a uniform share of the set).
"""

from __future__ import annotations

import hashlib
import heapq
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from n2m.errors import UserError

MAX_BANK = 8192  # clips kept (8192 x 512 float32 = 16 MiB in a checkpoint)
# k of the bridge, chosen on the 28 training tracks of the former 42-track demo corpus alone: each caption's k nearest
# clips of the other tracks, averaged, lie nearest a clip of the caption's own style for 21 of 28 captions at k = 5
# (18 at k = 1 and 3, 17 at 10)
DEFAULT_NEIGHBOURS = 5
BRIDGES = {"nearest": "the mean of the K training clips' audio embeddings nearest the text's (kNN-Diffusion)",
           "direct": "the text embedding itself in the audio embedding's place (MusicLM's substitution)"}
BANK_FILE = "joint_bank.safetensors"


def key_rank(key: str) -> int:
    """The 64-bit hash that orders clips in the sketch."""
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big")


@dataclass
class JointBank:
    """``keys`` ``[N]`` of training clips and their joint audio embeddings ``vectors`` ``[N, D]`` (float32, unit norm)."""

    keys: list[str]
    vectors: torch.Tensor

    def __post_init__(self) -> None:
        if self.vectors.ndim != 2 or self.vectors.shape[0] != len(self.keys) or not self.keys:
            raise UserError(f"a joint bank needs N keys and [N, D] vectors, got {len(self.keys)} keys and "
                            f"{tuple(self.vectors.shape)}")

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def nearest(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, list[list[dict[str, Any]]]]:
        """For text embeddings ``queries`` ``[B, D]``: the unit-norm mean of each one's ``k`` nearest bank vectors by
        cosine ``[B, D]``, and per query its matches (``key``, ``cos``) nearest first."""
        if queries.ndim != 2 or queries.shape[1] != self.dim:
            raise UserError(f"text embeddings {tuple(queries.shape)} do not fit the bank's width {self.dim}")
        bank = torch.nn.functional.normalize(self.vectors.float(), dim=1)
        q = torch.nn.functional.normalize(torch.from_numpy(np.asarray(queries, np.float32)), dim=1)
        cos, rows = (q @ bank.T).topk(min(k, len(self.keys)), dim=1)  # [B, k]
        mixed = torch.nn.functional.normalize(bank[rows].mean(dim=1), dim=1)
        matches = [[{"key": self.keys[r], "cos": round(float(c), 4)} for r, c in zip(rs.tolist(), cs.tolist())]
                   for rs, cs in zip(rows, cos)]
        return mixed.numpy(), matches

    def state(self) -> dict[str, Any]:
        """What a training checkpoint stores (``n2m.joint_bank``)."""
        return {"keys": list(self.keys), "vectors": self.vectors.float().contiguous()}

    @classmethod
    def from_state(cls, state: dict[str, Any] | None) -> JointBank | None:
        return None if not state else cls(list(state["keys"]), state["vectors"].float())

    def save(self, directory: str | Path) -> None:
        """``DIR/joint_bank.safetensors``: the vectors, the keys in its metadata."""
        from safetensors.torch import save_file

        save_file({"vectors": self.vectors.float().contiguous()}, str(Path(directory) / BANK_FILE),
                  metadata={"keys": json.dumps(self.keys)})

    @classmethod
    def load(cls, directory: str | Path) -> JointBank | None:
        """The bank of an export directory, or None when it has none."""
        from safetensors import safe_open

        path = Path(directory) / BANK_FILE
        if not path.is_file():
            return None
        try:
            with safe_open(str(path), framework="pt") as f:
                return cls(json.loads(f.metadata()["keys"]), f.get_tensor("vectors"))
        except UserError as err:
            raise UserError(f"{path}: {err}") from None
        except Exception as err:  # noqa: BLE001 - safetensors and json raise their own types for a damaged file
            raise UserError(f"cannot read {path}: {str(err).strip() or type(err).__name__}") from err


class BankCollector:
    """Keeps the ``capacity`` clips with the lowest :func:`key_rank` among those added (each key once)."""

    def __init__(self, capacity: int = MAX_BANK):
        self.capacity = capacity
        self._kept: dict[str, torch.Tensor] = {}
        self._heap: list[tuple[int, str]] = []  # (-rank, key): the highest-ranked kept clip on top

    def __len__(self) -> int:
        return len(self._kept)

    def add(self, keys: list[str], vectors: torch.Tensor) -> None:
        """Offer clips ``keys`` ``[B]`` with embeddings ``vectors`` ``[B, D]`` (copied to the CPU only when some are
        kept, once per call: no device sync on the steps that keep nothing)."""
        rows: torch.Tensor | None = None
        for i, key in enumerate(keys):
            if key in self._kept:
                continue
            rank = key_rank(key)
            if len(self._kept) >= self.capacity:
                if rank >= -self._heap[0][0]:
                    continue
                _, dropped = heapq.heappop(self._heap)
                del self._kept[dropped]
            if rows is None:
                rows = vectors.detach().float().cpu()
            self._kept[key] = rows[i].clone()
            heapq.heappush(self._heap, (-rank, key))

    def bank(self) -> JointBank | None:
        """The clips kept, in key order (None before any)."""
        if not self._kept:
            return None
        keys = sorted(self._kept)
        return JointBank(keys, torch.stack([self._kept[k] for k in keys]))

    def restore(self, bank: JointBank | None) -> None:
        """Start from a saved bank (a resumed run)."""
        if bank is not None:
            self.add(bank.keys, bank.vectors)


@dataclass(frozen=True)
class TextBridge:
    """How a text prompt fills a joint-embedding slot (``n2m sample --text-bridge``, ``--bridge-neighbours``):
    ``mode`` one of :data:`BRIDGES`, or None for ``nearest`` when the stage holds a bank and ``direct`` otherwise."""

    mode: str | None = None
    neighbours: int = DEFAULT_NEIGHBOURS

    def __post_init__(self) -> None:
        if self.mode is not None and self.mode not in BRIDGES:
            raise UserError(f"--text-bridge must be one of {', '.join(BRIDGES)}, got {self.mode!r}")
        if self.neighbours < 1:
            raise UserError(f"--bridge-neighbours must be at least 1, got {self.neighbours}")

    def mode_for(self, bank: JointBank | None, stage: str, from_text: bool = False) -> str:
        """The bridge a stage uses; ``nearest`` asked of a stage without a bank is a one-line :class:`UserError`.
        ``from_text``: the stage trained on the captions' text embeddings (``--condition text+text-embedding``),
        which are already where a prompt's embedding lies: ``direct``."""
        if from_text:
            if self.mode == "nearest":
                raise UserError(f"--text-bridge nearest: the {stage} stage trained on captions' joint text embeddings "
                                "(--condition text+text-embedding), so a prompt's own embedding is its condition: "
                                "drop --text-bridge or use direct")
            return "direct"
        if self.mode is None:
            return "nearest" if bank is not None else "direct"
        if self.mode == "nearest" and bank is None:
            raise UserError(f"--text-bridge nearest: the {stage} stage holds no bank of training clips' embeddings "
                            "(trained before n2m kept one): use --text-bridge direct, or train it again")
        return self.mode

    def apply(self, embeddings: np.ndarray, bank: JointBank | None, stage: str,
              from_text: bool = False) -> tuple[np.ndarray, dict[str, Any]]:
        """Text embeddings ``[B, D]`` -> the vectors that condition the stage ``[B, D]`` and what the sidecar records
        (``mode``; for ``nearest`` also ``neighbours`` and per prompt its ``matches``); ``from_text``: see
        :meth:`mode_for`."""
        mode = self.mode_for(bank, stage, from_text)
        if mode == "direct":
            return embeddings, {"mode": "direct"}
        vectors, matches = bank.nearest(embeddings, self.neighbours)
        return vectors, {"mode": "nearest", "neighbours": self.neighbours, "matches": matches}
