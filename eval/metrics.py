"""FAD and CLAP score as ``torchmetrics.Metric`` s, for use inside training/validation loops (DDP-safe).

States are sums (count, sum of embeddings, sum of outer products; sum of cosines and of their squares) in float64 with
``dist_reduce_fx="sum"``, so a distributed ``compute()`` gives exactly what one process would on all the data, and the
memory is ``O(D^2)`` however many clips are seen. The Fréchet distance itself is :func:`n2m.eval.frechet.frechet_distance`.
"""

from __future__ import annotations

import torch
from torchmetrics import Metric

from n2m.eval.frechet import frechet_distance, stats_from_sums


class FrechetAudioDistance(Metric):
    """``update(embeddings [N, D], real: bool)`` feeds the reference (``real=True``) or generated set;
    ``compute()`` -> FAD (NaN when no valid value exists; see :class:`n2m.eval.frechet.FrechetResult`)."""

    is_differentiable = False
    higher_is_better = False
    full_state_update = False

    def __init__(self, dim: int, **kwargs):
        super().__init__(**kwargs)
        self.dim = dim
        for side in ("real", "fake"):
            self.add_state(f"{side}_n", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_sum", torch.zeros(dim, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_outer", torch.zeros(dim, dim, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, embeddings: torch.Tensor, real: bool) -> None:
        x = embeddings.detach().to(torch.float64).reshape(-1, self.dim)
        side = "real" if real else "fake"
        setattr(self, f"{side}_n", getattr(self, f"{side}_n") + x.shape[0])
        setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + x.sum(0))
        setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + x.T @ x)

    def compute(self) -> torch.Tensor:
        stats = [stats_from_sums(int(getattr(self, f"{s}_n").item()), getattr(self, f"{s}_sum").cpu().numpy(),
                                 getattr(self, f"{s}_outer").cpu().numpy()) for s in ("real", "fake")]
        result = frechet_distance(stats[0], stats[1])
        return torch.tensor(result.value if result.valid else float("nan"), dtype=torch.float64)


class ClapScore(Metric):
    """``update(audio [N, D], text [N, D])`` with row ``i`` of both the same item; ``compute()`` -> mean cosine."""

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, audio: torch.Tensor, text: torch.Tensor) -> None:
        if audio.shape != text.shape:
            raise ValueError(f"audio {tuple(audio.shape)} and text {tuple(text.shape)} embeddings must pair row by row")
        cos = torch.nn.functional.cosine_similarity(audio.detach().double(), text.detach().double(), dim=-1)
        self.total = self.total + cos.sum()
        self.count = self.count + cos.numel()

    def compute(self) -> torch.Tensor:
        return self.total / self.count

