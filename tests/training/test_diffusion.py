"""Schedules, parametrisations, loss weighting, CFG dropout and conditioning augmentation against closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.ndimage
import scipy.stats
import torch

from n2m.training.diffusion.augment import ConditioningAugmentation, blur, gaussian_kernels
from n2m.training.diffusion.denoiser import Conditioning, Denoiser, cfg_dropout
from n2m.training.diffusion.schedules import LOG_SNR_MAX, get_schedule

# ---------------------------------------------------------------------------------------------------------------------
# Schedules


def test_linear_schedule_matches_ddpm_discrete_betas():
    """Continuous VP-SDE form vs the product of (1 - beta_i) over DDPM's 1000 linear betas (Ho et al. 2020)."""
    betas = np.linspace(1e-4, 0.02, 1000, dtype=np.float64)
    discrete = np.cumprod(1.0 - betas)  # alpha_bar after n = 1..1000 steps
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000.0
    continuous = get_schedule("linear").alpha_bar(t).numpy()
    np.testing.assert_allclose(np.log(continuous), np.log(discrete), rtol=0.02, atol=2e-3)


def test_cosine_schedule_matches_nichol_dhariwal_formula():
    s = 0.008
    t = np.linspace(0.0, 0.98, 50)
    f = lambda u: np.cos((u + s) / (1 + s) * np.pi / 2) ** 2  # noqa: E731 - their eq. 17
    expected = f(t) / f(0.0)
    got = get_schedule("cosine").alpha_bar(torch.from_numpy(t)).numpy()
    np.testing.assert_allclose(got, np.clip(expected, 1 / (1 + math.exp(LOG_SNR_MAX)), 1.0), rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("name", ["linear", "cosine"])
def test_schedules_are_variance_preserving_and_monotone(name):
    schedule = get_schedule(name)
    t = torch.linspace(0, 1, 201)
    alpha, sigma = schedule.alpha_sigma(t)
    torch.testing.assert_close(alpha**2 + sigma**2, torch.ones_like(t))
    lam = schedule.log_snr(t)
    assert (lam[1:] <= lam[:-1]).all() and lam[0] == LOG_SNR_MAX and torch.isfinite(lam).all()
    assert schedule.alpha_bar(torch.tensor([0.5], dtype=torch.float64)).dtype == torch.float64


# ---------------------------------------------------------------------------------------------------------------------
# Parametrisations and loss


def _batch(seed=0, b=5, t_len=64):
    g = torch.Generator().manual_seed(seed)
    x0, eps = torch.randn(b, 1, t_len, generator=g), torch.randn(b, 1, t_len, generator=g)
    t = torch.rand(b, generator=g) * 0.98 + 0.01
    return x0, eps, t


@pytest.mark.parametrize("param", ["eps", "v"])
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_oracle_networks_recover_x0_and_eps(param, schedule):
    x0, eps, t = _batch()
    sched = get_schedule(schedule)
    alpha, sigma = (v.view(-1, 1, 1) for v in sched.alpha_sigma(t))
    x_t = alpha * x0 + sigma * eps
    # v as the derivative of x_phi = cos(phi) x0 + sin(phi) eps at phi = atan2(sigma, alpha) (Salimans & Ho 2022)
    phi, x0d, epsd = torch.atan2(sigma, alpha).double(), x0.double(), eps.double()
    h = 1e-4
    v_numeric = (((torch.cos(phi + h) * x0d + torch.sin(phi + h) * epsd)
                  - (torch.cos(phi - h) * x0d + torch.sin(phi - h) * epsd)) / (2 * h)).float()
    truth = {"eps": eps, "v": v_numeric}[param]
    denoiser = Denoiser(lambda x, tt, **_: truth, sched, param)
    pred = denoiser.predict(x_t, t, Conditioning())
    torch.testing.assert_close(pred.eps, eps, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(pred.x0, x0, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(denoiser.diffuse(x0, t, eps), x_t)
    assert float(denoiser.loss(x0, Conditioning(), t=t, noise=eps).max()) < 1e-6  # the oracle has zero loss


def test_sigma_weighting_is_sigma_squared_times_simplified():
    x0, eps, t = _batch(1)
    net = lambda x, tt, **_: 0.3 * x  # noqa: E731
    sched = get_schedule("linear")
    plain = Denoiser(net, sched, "eps", "simplified").loss(x0, Conditioning(), t=t, noise=eps)
    weighted = Denoiser(net, sched, "eps", "sigma").loss(x0, Conditioning(), t=t, noise=eps)
    _, sigma = sched.alpha_sigma(t)
    torch.testing.assert_close(weighted, sigma**2 * plain)
    alpha = sched.alpha_sigma(t)[0].view(-1, 1, 1)
    expected = ((0.3 * (alpha * x0 + sigma.view(-1, 1, 1) * eps) - eps) ** 2).mean(dim=(1, 2))
    torch.testing.assert_close(plain, expected)


def test_cfg_dropout_rate_and_what_is_dropped():
    b, p = 20_000, 0.1
    text, mask = torch.randn(b, 4, 3), torch.ones(b, 4, dtype=torch.bool)
    cond, dropped = cfg_dropout(Conditioning(text=text, text_mask=mask), p, torch.Generator().manual_seed(0))
    rate = dropped.float().mean().item()
    assert abs(rate - p) < 4 * math.sqrt(p * (1 - p) / b)
    assert not cond.text_mask[dropped].any() and (cond.text[dropped] == 0).all()
    assert torch.equal(cond.text[~dropped], text[~dropped]) and cond.text_mask[~dropped].all()


def test_denoiser_loss_applies_cfg_dropout_at_the_requested_rate():
    seen = []

    def net(x, t, text=None, text_mask=None, **_):
        seen.append(~text_mask.any(1))
        return torch.zeros_like(x)

    b = 8000
    cond = Conditioning(text=torch.randn(b, 2, 3), text_mask=torch.ones(b, 2, dtype=torch.bool))
    Denoiser(net, get_schedule("cosine")).loss(torch.zeros(b, 1, 4), cond, cfg_p=0.1,
                                               generator=torch.Generator().manual_seed(3))
    assert abs(seen[0].float().mean().item() - 0.1) < 4 * math.sqrt(0.09 / b)


def _levels_drawn(t_min: float, b: int = 20_000) -> torch.Tensor:
    """The noise levels ``[b]`` a denoiser with ``t_min`` draws for one loss call."""
    seen = []

    def net(x, t, **_):
        seen.append(t)
        return torch.zeros_like(x)

    Denoiser(net, get_schedule("cosine"), "v", t_min=t_min).loss(torch.zeros(b, 1, 2), Conditioning(),
                                                                 generator=torch.Generator().manual_seed(5))
    return seen[0]


@pytest.mark.parametrize("t_min", [0.0, 0.3])
def test_training_levels_are_uniform_on_t_min_to_one(t_min):
    """``t ~ U[t_min, 1]``: a Kolmogorov-Smirnov test against scipy's uniform on that interval, and nothing below it."""
    t = _levels_drawn(t_min).numpy()
    assert t.min() >= t_min and t.max() <= 1.0
    assert scipy.stats.kstest(t, scipy.stats.uniform(loc=t_min, scale=1.0 - t_min).cdf).pvalue > 1e-3
    if t_min:  # and not the paper's U[0, 1]
        assert scipy.stats.kstest(t, scipy.stats.uniform(loc=0.0, scale=1.0).cdf).pvalue < 1e-6


@pytest.mark.parametrize("t_min", [-0.1, 1.0])
def test_t_min_outside_zero_to_one_is_refused(t_min):
    with pytest.raises(ValueError, match="t_min must lie in"):
        Denoiser(lambda x, t, **_: x, get_schedule("cosine"), t_min=t_min)


# ---------------------------------------------------------------------------------------------------------------------
# Conditioning augmentation


def test_blur_matches_scipy_gaussian_window_convolution():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 200, generator=g)
    sigmas = torch.tensor([0.1, 1.3, 5.0])
    out = blur(x, sigmas).numpy()
    for i, s in enumerate(sigmas.tolist()):
        weights = np.exp(-0.5 * (np.arange(-5, 5) / s) ** 2)  # 10 taps, centred on a sample
        weights /= weights.sum()
        for c in range(2):
            # correlate1d centres a 10-tap kernel at index 5 (origin 0), i.e. offsets -5..4; 'mirror' = torch reflect
            ref = scipy.ndimage.correlate1d(x[i, c].numpy().astype(np.float64), weights, mode="mirror")
            np.testing.assert_allclose(out[i, c], ref, atol=1e-5)
    identity = blur(x, torch.full((3,), 0.1))
    torch.testing.assert_close(identity, x, atol=1e-5, rtol=0)  # sigma 0.1: no blur, no shift
    assert torch.allclose(gaussian_kernels(sigmas).sum(1), torch.ones(3))


def test_augmentation_levels_are_uniform_and_noise_matches_the_schedule():
    schedule = get_schedule("linear")
    aug = ConditioningAugmentation(schedule, t_max=0.5)
    gen = torch.Generator().manual_seed(0)
    z = torch.zeros(4000, 1, 512)
    out, t = aug(z, gen)
    assert float(t.min()) >= 0.0 and float(t.max()) <= 0.5
    assert scipy.stats.kstest(t.numpy(), "uniform", args=(0.0, 0.5)).pvalue > 1e-3
    _, sigma = schedule.alpha_sigma(t)
    ratio = out.std(dim=(1, 2)) / sigma
    assert abs(float(ratio.mean()) - 1.0) < 0.01 and float(ratio.std()) < 0.05  # noise std = sigma(t_aug)
    const = torch.full((4, 1, 20_000), 0.7)
    levels = torch.tensor([0.0, 0.1, 0.3, 0.5])
    mean = aug.apply(const, levels, generator=gen).mean(dim=(1, 2))
    alpha, _ = schedule.alpha_sigma(levels)
    torch.testing.assert_close(mean, 0.7 * alpha, atol=0.02, rtol=0)


def test_blur_range_is_drawn_per_example_and_removes_high_frequencies():
    aug = ConditioningAugmentation(get_schedule("linear"), t_max=0.0, blur_sigma=(0.1, 5.0))
    z = torch.randn(512, 1, 256, generator=torch.Generator().manual_seed(1))
    out, t = aug(z, torch.Generator().manual_seed(2))
    assert (t == 0).all()
    hf = lambda x: torch.fft.rfft(x, dim=-1).abs()[..., 96:].pow(2).mean(dim=(1, 2))  # noqa: E731
    kept = hf(out) / hf(z)
    assert float(kept.min()) < 0.01 and float(kept.max()) > 0.5  # strong and weak blurs both occur


def test_data_scale_diffuses_the_scaled_signal_and_to_data_leaves_it():
    """A denoiser with data scale s trains on ``s x0``: its loss equals the unscaled denoiser's loss on ``s x0``, and
    an oracle network of the scaled signal gives ``x0`` back through ``to_data``."""
    x0, eps, t = _batch(2)
    sched, s = get_schedule("cosine"), 4.0
    net = lambda x, tt, **_: 0.3 * x  # noqa: E731
    scaled = Denoiser(net, sched, "v", data_scale=s)
    torch.testing.assert_close(scaled.loss(x0, Conditioning(), t=t, noise=eps),
                               Denoiser(net, sched, "v").loss(s * x0, Conditioning(), t=t, noise=eps))
    alpha, sigma = (v.view(-1, 1, 1) for v in sched.alpha_sigma(t))
    oracle = Denoiser(lambda x, tt, **_: alpha * eps - sigma * s * x0, sched, "v", data_scale=s)
    pred = oracle.predict(alpha * s * x0 + sigma * eps, t, Conditioning())
    torch.testing.assert_close(oracle.to_data(pred.x0), x0, atol=1e-5, rtol=1e-5)
    assert float(oracle.loss(x0, Conditioning(), t=t, noise=eps).max()) < 1e-9
