"""benchmarks/parity.py: the float64 cosine, the gradient test's verdict and its control on a tiny network."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.parity import (  # noqa: E402
    GRAD_COSINE,
    _cosine,
    _loss_and_grad,
    _rounded_weights_grad,
    gradient_verdict,
    perturb_zero_weights,
    training_parity,
)
from benchmarks.train import Step  # noqa: E402
from n2m.training.stages import STAGES  # noqa: E402


def test_cosine_is_summed_in_float64():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=200_000), rng.normal(size=200_000) + 3.0
    expected = float(np.dot(a, b) / np.sqrt(np.dot(a, a) * np.dot(b, b)))
    assert _cosine(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("cosine, control, verdict", [
    (0.999, 1.0, "ok"), (GRAD_COSINE, GRAD_COSINE, "ok"), (0.98, 0.9999, "MISS"), (0.08, -0.08, "n/a"),
    (0.999, 0.95, "n/a"),
])
def test_gradient_verdict(cosine, control, verdict):
    assert gradient_verdict(cosine, control) == verdict


def test_tiny_network_is_well_conditioned_and_agrees():
    row = training_parity("vocoder", "tiny", torch.device("cpu"), batch=2)
    assert row["grad_cosine_control"] > 0.999 and row["grad_test"] == "ok" and row["ok"]
    assert row["loss_rel_diff"] < 0.01


def test_the_control_rounds_the_weights_and_restores_them():
    step = Step(STAGES["vocoder"], "tiny", torch.device("cpu"), bf16=False, batch=2, compile_="")
    perturb_zero_weights(step.net)
    before = [p.detach().clone() for p in step.net.parameters()]
    assert any(not torch.equal(p, p.to(torch.bfloat16).float()) for p in before)  # rounding changes something
    t, noise = torch.full((2,), 0.5), torch.randn(step.x0.shape, generator=torch.Generator().manual_seed(0))
    grad = _rounded_weights_grad(step, t, noise)
    assert all(torch.equal(p, q) for p, q in zip(step.net.parameters(), before))
    _, exact = _loss_and_grad(step, False, t, noise)
    assert not torch.equal(grad, exact) and _cosine(grad, exact) > 0.999
