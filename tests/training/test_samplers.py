"""Samplers, guidance and clipping against closed forms.

The data are Gaussian, ``x0 ~ N(0, S^2)`` per element, so the exact denoiser is known in closed form:
``E[eps | x_t] = sqrt(1 - ab) / (ab S^2 + 1 - ab) * x_t`` and ``E[x0 | x_t] = sqrt(ab) S^2 / (ab S^2 + 1 - ab) * x_t``
(each from Gaussian conditioning; the samplers take both). Every sampler step is then a linear map of ``x_t`` whose
coefficients the tests derive independently (Gaussian conditioning by covariance algebra, or the exact ODE flow).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from n2m.training.diffusion.denoiser import Prediction
from n2m.training.diffusion.guidance import classifier_free, double_classifier_free, dynamic_clip, make_clip
from n2m.training.diffusion.samplers import (
    SAMPLERS,
    Steps,
    make_steps,
    sample_ancestral,
    sample_ddim,
    sample_dpmpp_2m,
)

S = 0.5  # data standard deviation


def alpha_bar(t: torch.Tensor) -> torch.Tensor:
    """VP-SDE linear schedule (Song et al. 2021): beta(t) = 0.1 + 19.9 t."""
    return torch.exp(-(0.1 * t + 0.5 * 19.9 * t**2))


def posterior_mean(x: torch.Tensor, t: torch.Tensor, cond) -> Prediction:
    """The posterior means of eps and x0 given x_t."""
    ab = alpha_bar(t.double()).view(-1, 1, 1).to(x.dtype)
    var = ab * S**2 + 1 - ab
    return Prediction(eps=torch.sqrt(1 - ab) / var * x, x0=torch.sqrt(ab) * S**2 / var * x)


def _var(ab: float) -> float:
    return ab * S**2 + 1 - ab


def _x0_coef(ab: float) -> float:
    """E[x0 | x_t] = k x_t for Gaussian data (independent of the eps parametrisation)."""
    return math.sqrt(ab) * S**2 / _var(ab)


# ---------------------------------------------------------------------------------------------------------------------
# Steps


def test_step_spacings_put_short_steps_where_named():
    for name in ("uniform", "front_heavy", "back_heavy"):
        steps = make_steps(alpha_bar, 10, spacing=name)
        assert len(steps) == 10 and float(steps.t[0]) == 1.0 and float(steps.t[-1]) == 0.0
        assert float(steps.alpha_bar[-1]) == 1.0
    dt = {name: -torch.diff(make_steps(alpha_bar, 10, spacing=name).t) for name in ("front_heavy", "back_heavy")}
    assert dt["front_heavy"][0] < dt["front_heavy"][-1]
    assert dt["back_heavy"][0] > dt["back_heavy"][-1]
    np.testing.assert_allclose(-torch.diff(make_steps(alpha_bar, 4).t).numpy(), 0.25)


def test_steps_reject_bad_input():
    with pytest.raises(ValueError):
        make_steps(alpha_bar, 10, spacing="sideways")
    with pytest.raises(ValueError):
        make_steps(lambda t: 1.0 - t, 10)  # alpha_bar(1) == 0
    with pytest.raises(ValueError):
        Steps(torch.tensor([0.0, 1.0], dtype=torch.float64), torch.tensor([1.0, 0.5], dtype=torch.float64))


# ---------------------------------------------------------------------------------------------------------------------
# Deterministic samplers: exact linear maps


def _ddim_gain(steps: Steps) -> float:
    """DDIM(eta=0) as a scalar recursion written from the posterior mean E[x0|x] (no eps algebra)."""
    gain = 1.0
    for ab_s, ab_u in zip(steps.alpha_bar[:-1].tolist(), steps.alpha_bar[1:].tolist()):
        k = _x0_coef(ab_s)
        eps_per_x = (1 - math.sqrt(ab_s) * k) / math.sqrt(1 - ab_s)
        gain *= math.sqrt(ab_u) * k + math.sqrt(1 - ab_u) * eps_per_x
    return gain


def test_ddim_matches_scalar_recursion_and_converges_to_the_exact_ode_flow():
    x_t = torch.randn(2, 1, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    steps = make_steps(alpha_bar, 12)
    out = sample_ddim(posterior_mean, x_t, steps)
    np.testing.assert_allclose(out.numpy(), (_ddim_gain(steps) * x_t).numpy(), rtol=1e-10)

    exact = S / math.sqrt(_var(float(alpha_bar(torch.tensor(1.0, dtype=torch.float64)))))  # PF-ODE maps std to std
    fine = sample_ddim(posterior_mean, x_t, make_steps(alpha_bar, 2000))
    np.testing.assert_allclose(fine.numpy(), (exact * x_t).numpy(), rtol=2e-3)


def test_dpmpp_2m_is_second_order_and_beats_ddim_at_equal_steps():
    """On log-SNR-uniform steps ending at t_min (then one step to 0), against the exact flow to t_min then E[x0|x]."""
    x_t = torch.ones(1, 1, 4, dtype=torch.float64)
    ab_min = float(alpha_bar(torch.tensor(1e-3, dtype=torch.float64)))
    ab_max = float(alpha_bar(torch.tensor(1.0, dtype=torch.float64)))
    exact = math.sqrt(_var(ab_min)) / math.sqrt(_var(ab_max)) * _x0_coef(ab_min)

    def err(sampler, n):
        steps = make_steps(alpha_bar, n + 1, spacing="log_snr", t_min=1e-3)
        return abs(float(sampler(posterior_mean, x_t, steps)[0, 0, 0]) - exact) / exact

    for n in (10, 20, 40):
        assert err(sample_dpmpp_2m, n) < 0.2 * err(sample_ddim, n)
    assert err(sample_dpmpp_2m, 40) < 5e-3
    # doubling the steps cuts a second-order solver's error by ~4x (first-order DDIM: ~2x)
    assert err(sample_dpmpp_2m, 20) / err(sample_dpmpp_2m, 40) > 3.0
    assert err(sample_ddim, 20) / err(sample_ddim, 40) < 2.5


def test_dpmpp_single_step_is_first_order_formula():
    """One step from t=1 to t=0 must return the x0 prediction itself."""
    x_t = torch.full((1, 1, 3), 2.0, dtype=torch.float64)
    steps = make_steps(alpha_bar, 1)
    ab = float(steps.alpha_bar[0])
    np.testing.assert_allclose(sample_dpmpp_2m(posterior_mean, x_t, steps).numpy(), _x0_coef(ab) * 2.0, rtol=1e-12)


# ---------------------------------------------------------------------------------------------------------------------
# Ancestral sampling: the output variance from Gaussian conditioning


def _posterior_by_conditioning(ab_s: float, ab_u: float) -> tuple[float, float, float]:
    """q(x_u | x_s, x0) from the joint covariance of (x_u, x_s) given x0: (coef of x0, coef of x_s, variance)."""
    a_u, a_s = math.sqrt(ab_u), math.sqrt(ab_s)
    alpha = ab_s / ab_u
    cov = np.array([[1 - ab_u, math.sqrt(alpha) * (1 - ab_u)], [math.sqrt(alpha) * (1 - ab_u), 1 - ab_s]])
    gain = cov[0, 1] / cov[1, 1]
    var = cov[0, 0] - cov[0, 1] ** 2 / cov[1, 1]
    return a_u - gain * a_s, gain, var


def _ancestral_variance(steps: Steps, gamma: float) -> float:
    v = 1.0
    pairs = list(zip(steps.alpha_bar[:-1].tolist(), steps.alpha_bar[1:].tolist()))
    for ab_s, ab_u in pairs:
        c0, cx, var_tilde = _posterior_by_conditioning(ab_s, ab_u)
        beta = 1 - ab_s / ab_u
        var = 0.0 if ab_u == 1.0 else beta**gamma * var_tilde ** (1 - gamma)
        m = c0 * _x0_coef(ab_s) + cx
        v = m * m * v + var
    return v


@pytest.mark.parametrize("gamma,n,spacing", [(0.0, 8, "uniform"), (1.0, 8, "front_heavy"), (0.5, 20, "back_heavy")])
def test_ancestral_output_variance_matches_gaussian_conditioning(gamma, n, spacing):
    steps = make_steps(alpha_bar, n, spacing=spacing)
    gen = torch.Generator().manual_seed(1)
    x_t = torch.randn(4, 1, 50_000, dtype=torch.float64, generator=gen)
    out = sample_ancestral(posterior_mean, x_t, steps, gamma=gamma, generator=gen)
    assert float(out.var()) == pytest.approx(_ancestral_variance(steps, gamma), rel=0.02)


def test_ancestral_with_many_steps_reproduces_the_data_variance():
    """gamma = 0 undershoots and gamma = 1 overshoots S^2 at finite steps; both converge to it."""
    steps = make_steps(alpha_bar, 1000)
    low, high = _ancestral_variance(steps, 0.0), _ancestral_variance(steps, 1.0)
    assert low < S**2 < high
    assert low == pytest.approx(S**2, rel=0.02) and high == pytest.approx(S**2, rel=0.02)
    gen = torch.Generator().manual_seed(2)
    out = sample_ancestral(posterior_mean, torch.randn(2, 1, 20_000, dtype=torch.float64, generator=gen), steps, generator=gen)
    assert float(out.var()) == pytest.approx(low, rel=0.03)


def test_ddim_eta_one_equals_ancestral_gamma_zero_and_seeds_reproduce():
    steps = make_steps(alpha_bar, 6, spacing="back_heavy")
    x_t = torch.randn(2, 1, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    run = lambda f, seed, **kw: f(posterior_mean, x_t, steps, generator=torch.Generator().manual_seed(seed), **kw)  # noqa: E731
    a = run(sample_ancestral, 7, gamma=0.0)
    np.testing.assert_allclose(a.numpy(), run(sample_ddim, 7, eta=1.0).numpy(), rtol=1e-9, atol=1e-12)
    assert torch.equal(a, run(sample_ancestral, 7, gamma=0.0))
    assert not torch.allclose(a, run(sample_ancestral, 8, gamma=0.0))


def test_callback_sees_every_step():
    seen = []
    sample_ddim(posterior_mean, torch.ones(1, 1, 4, dtype=torch.float64), make_steps(alpha_bar, 5), callback=seen.append)
    assert [info["i"] for info in seen] == list(range(5))
    assert seen[-1]["t"] == pytest.approx(float(make_steps(alpha_bar, 5).t[-2]))


# ---------------------------------------------------------------------------------------------------------------------
# Guidance and clipping


def _conditional_model(calls: list):
    def model(x, t, cond):
        calls.append(x.shape[0])
        return x * cond["gain"].view(-1, 1, 1) + cond["bias"].view(-1, 1, 1) + t.view(-1, 1, 1)

    return model


def test_guidance_scale_one_is_the_conditional_model_and_scale_w_is_the_formula():
    x = torch.randn(3, 2, 5, generator=torch.Generator().manual_seed(0))
    t = torch.full((3,), 0.3)
    cond = {"gain": torch.tensor([1.0, 2.0, 3.0]), "bias": torch.tensor([0.5, -0.5, 1.0])}
    uncond = {"gain": torch.zeros(3), "bias": torch.zeros(3)}
    calls: list = []
    model = _conditional_model(calls)
    eps_c, eps_u = model(x, t, cond), model(x, t, uncond)

    assert torch.equal(classifier_free(model, 1.0, uncond)(x, t, cond), eps_c)
    assert torch.equal(classifier_free(model, 0.0, uncond)(x, t, cond), eps_u)
    calls.clear()
    guided = classifier_free(model, 5.0, uncond)(x, t, cond)
    assert calls == [6]  # one batched call for both halves
    expected = eps_u.double() + 5.0 * (eps_c.double() - eps_u.double())
    np.testing.assert_allclose(guided.double().numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)


def test_guided_predictions_keep_x0_and_eps_consistent():
    """Guidance combines eps and x0 with the same weights, which sum to 1, so at every scale the guided x0 is the one
    the guided eps implies: ``x0 = (x - sigma eps) / alpha`` (x_t = alpha x0 + sigma eps)."""
    alpha, sigma = 0.6, 0.8

    def model(x, t, cond):
        eps = torch.tanh(x * cond["gain"].view(-1, 1, 1) + cond["bias"].view(-1, 1, 1))
        return Prediction(eps=eps, x0=(x - sigma * eps) / alpha)

    x = torch.randn(3, 2, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    t = torch.full((3,), 0.3, dtype=torch.float64)
    full = {"gain": torch.tensor([1.0, 2.0, 3.0]).double(), "bias": torch.tensor([0.5, -0.5, 1.0]).double()}
    half = {"gain": full["gain"], "bias": torch.zeros(3).double()}
    none = {"gain": torch.zeros(3).double(), "bias": torch.zeros(3).double()}
    guided = [classifier_free(model, w, none) for w in (0.0, 1.0, 5.0)]
    guided += [double_classifier_free(model, b, a, half, none) for a, b in ((3.0, 6.0), (0.5, 1.0), (1.0, 2.0))]
    for denoise in guided:
        pred = denoise(x, t, full)
        torch.testing.assert_close(pred.x0, (x - sigma * pred.eps) / alpha, rtol=1e-12, atol=1e-12)
    eps_c, eps_u = model(x, t, full).eps, model(x, t, none).eps
    torch.testing.assert_close(guided[2](x, t, full).eps, eps_u + 5.0 * (eps_c - eps_u), rtol=1e-12, atol=1e-12)


def test_dynamic_clip_matches_percentile_rule():
    gen = torch.Generator().manual_seed(0)
    x0 = torch.stack([torch.randn(2, 500, generator=gen) * 3, torch.rand(2, 500, generator=gen) * 1.8 - 0.9])
    out = dynamic_clip(0.9)(x0)
    for i in range(2):
        s = max(1.0, float(np.percentile(x0[i].abs().numpy(), 90)))
        np.testing.assert_allclose(out[i].numpy(), np.clip(x0[i].numpy(), -s, s) / s, rtol=1e-6, atol=1e-7)
    assert float(out.abs().max()) <= 1.0
    assert float(out[0].abs().max()) == pytest.approx(1.0)  # the clipped sample reaches the bound
    assert torch.equal(out[1], x0[1])  # a sample inside [-1, 1] passes unchanged
    with pytest.raises(ValueError):
        dynamic_clip(0.0)


def test_clipped_sampling_stays_in_range():
    def wild(x, t, cond):  # predicts x0 far outside [-1, 1]
        ab = alpha_bar(t.double()).view(-1, 1, 1)
        x0 = -10.0 * x
        return Prediction(eps=(x - ab.sqrt() * x0) / (1 - ab).sqrt(), x0=x0)

    x_t = torch.randn(2, 1, 100, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    for name, (fn, opts) in SAMPLERS.items():
        out = fn(wild, x_t, make_steps(alpha_bar, 5), clip=make_clip("dynamic", 0.99), generator=torch.Generator(), **opts)
        assert float(out.abs().max()) <= 1.0 + 1e-9, name


def test_per_example_generators_make_samples_independent_of_the_batch():
    steps = make_steps(alpha_bar, 5)
    x_t = torch.randn(3, 1, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    gens = lambda: [torch.Generator().manual_seed(s) for s in (10, 11, 12)]  # noqa: E731
    batch = sample_ancestral(posterior_mean, x_t, steps, gamma=1.0, generator=gens())
    alone = sample_ancestral(posterior_mean, x_t[1:2], steps, gamma=1.0, generator=gens()[1:2])
    torch.testing.assert_close(batch[1:2], alone, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError):
        sample_ancestral(posterior_mean, x_t, steps, generator=gens()[:2])


# ---------------------------------------------------------------------------------------------------------------------
# Stopping early (t_stop) and clipping in data units


def test_t_stop_presses_the_spacing_into_t_stop_to_t_max_then_jumps_to_zero():
    steps = make_steps(alpha_bar, 5, t_stop=0.2)  # uniform: 4 steps of 0.2 from 1 to 0.2, then 0.2 -> 0
    np.testing.assert_allclose(steps.t.numpy(), [1.0, 0.8, 0.6, 0.4, 0.2, 0.0], atol=1e-12)
    assert float(steps.alpha_bar[-1]) == 1.0
    back = make_steps(alpha_bar, 6, spacing="back_heavy", t_stop=0.3).t  # t = 0.3 + 0.7 u^2 over u = 1, .8, ..., 0
    np.testing.assert_allclose(back[:-1].numpy(), 0.3 + 0.7 * np.linspace(1, 0, 6) ** 2, atol=1e-12)
    lam = lambda t: 0.5 * torch.log(alpha_bar(t) / (1 - alpha_bar(t)))  # noqa: E731
    snr = make_steps(alpha_bar, 6, spacing="log_snr", t_stop=0.25).t
    assert abs(float(snr[-2]) - 0.25) < 1e-9 and float(snr[-1]) == 0.0
    np.testing.assert_allclose(torch.diff(lam(snr[:-1])).numpy(), float(lam(snr[-2]) - lam(snr[0])) / 5, rtol=1e-6)
    for bad in ({"t_stop": 1.0}, {"t_stop": -0.1}):
        with pytest.raises(ValueError, match="t_stop"):
            make_steps(alpha_bar, 5, **bad)
    with pytest.raises(ValueError, match="two sampling steps"):
        make_steps(alpha_bar, 1, t_stop=0.5)


@pytest.mark.parametrize("sampler", ["ddim", "dpmpp"])
def test_sampling_with_t_stop_returns_the_estimate_at_t_stop(sampler):
    """DDIM's last step to t = 0 returns the denoiser's x0 at t_stop, k(ab) x (Gaussian conditioning); DPM-Solver++'s
    second-order last step mixes the last two x0 estimates."""
    x_t = torch.randn(2, 1, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    steps = make_steps(alpha_bar, 8, t_stop=0.3)
    seen = []
    out = SAMPLERS[sampler][0](lambda x, t, c: seen.append((x, t)) or posterior_mean(x, t, c), x_t, steps)
    last_x, last_t = seen[-1]
    assert abs(float(last_t[0]) - 0.3) < 1e-12 and len(seen) == 8
    if sampler == "ddim":
        np.testing.assert_allclose(out.numpy(), (_x0_coef(float(steps.alpha_bar[-2])) * last_x).numpy(), rtol=1e-10)
    else:  # the ODE still ends at the data: close to DDIM's answer, not equal
        ddim = sample_ddim(posterior_mean, x_t, steps)
        assert float((out - ddim).abs().max()) < 0.05 * float(ddim.abs().max())


def test_clip_with_a_data_scale_acts_on_the_signal_in_data_units():
    x0 = torch.tensor([[[-9.0, -3.0, 0.5, 2.0, 6.0]]])
    clip = make_clip("static", scale=4.0)  # the diffusion space holds 4x the signal: clip at +-4 there
    torch.testing.assert_close(clip(x0), torch.tensor([[[-4.0, -3.0, 0.5, 2.0, 4.0]]]))
    assert make_clip("none", scale=4.0) is None
