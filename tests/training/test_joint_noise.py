"""LAFITE's perturbation of the joint embedding while training (``--joint-noise``; Zhou et al. 2022, eq. 5): against
the closed form of the angle it makes in high dimension, and through the real training path (issue 16)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from n2m.training.diffusion.denoiser import Conditioning, perturb_joint


def _unit(rows: int, dim: int, seed: int) -> torch.Tensor:
    h = torch.randn(rows, dim, generator=torch.Generator().manual_seed(seed))
    return h / h.norm(dim=1, keepdim=True)


@pytest.mark.parametrize("xi", [0.25, 0.5, 1.0, 2.0])
def test_the_angle_matches_the_closed_form_in_high_dimension(xi):
    """``h' = h + xi ||h|| u`` with ``u`` uniform on the sphere: in D dimensions ``u . h`` ~ 1/sqrt(D), so the cosine of
    ``h'`` with ``h`` tends to ``1 / sqrt(1 + xi^2)``; ``h'`` is a unit vector whatever the norm of ``h``."""
    h = _unit(256, 4096, 0) * 3.0
    cond = Conditioning(joint=h, joint_mask=torch.ones(256, dtype=torch.bool))
    moved = perturb_joint(cond, xi, torch.Generator().manual_seed(1)).joint
    np.testing.assert_allclose(moved.norm(dim=1).numpy(), 1.0, atol=1e-5)
    cosine = (moved * h / 3.0).sum(1)
    assert abs(float(cosine.mean()) - 1.0 / np.sqrt(1.0 + xi * xi)) < 0.01
    assert float(cosine.std()) < 0.02


def test_the_direction_is_isotropic_and_seeded():
    """Over many draws the part of ``h'`` orthogonal to ``h`` averages to zero (no preferred direction), and the same
    generator seed gives the same perturbation."""
    h = _unit(1, 64, 3).expand(20_000, 64).contiguous()
    cond = Conditioning(joint=h, joint_mask=torch.ones(20_000, dtype=torch.bool))
    moved = perturb_joint(cond, 1.0, torch.Generator().manual_seed(4)).joint
    orthogonal = moved - (moved @ h[0])[:, None] * h[0]
    assert float(orthogonal.mean(0).norm()) < 0.02  # each draw's orthogonal part has norm ~ 0.7
    again = perturb_joint(cond, 1.0, torch.Generator().manual_seed(4)).joint
    torch.testing.assert_close(moved, again)


def test_zero_noise_and_dropped_embeddings_are_left_alone():
    h = _unit(4, 16, 5)
    mask = torch.tensor([True, False, True, False])
    dropped = h * mask[:, None]  # what condition dropout leaves: zeros with the mask off
    cond = Conditioning(joint=dropped, joint_mask=mask)
    assert perturb_joint(cond, 0.0) is cond
    moved = perturb_joint(cond, 0.5, torch.Generator().manual_seed(0))
    torch.testing.assert_close(moved.joint[~mask], dropped[~mask])
    assert not torch.allclose(moved.joint[mask], dropped[mask])
    assert torch.equal(moved.joint_mask, mask)
    assert perturb_joint(Conditioning(), 0.5).joint is None
