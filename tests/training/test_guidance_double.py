"""Double classifier-free guidance (Rouard et al. 2024, section 4.3) on toy denoisers whose branches are known in closed
form, and the independent two-condition dropout that trains a model for it, measured over many batches."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.stats
import torch

from n2m.training.diffusion.denoiser import Conditioning, cfg_dropout_pair
from n2m.training.diffusion.guidance import classifier_free, double_classifier_free

B, C, T, D = 3, 2, 5, 4


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, C, T, generator=g, dtype=torch.float64)
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    text = torch.randn(B, D, generator=g, dtype=torch.float64)
    audio = torch.randn(B, D, generator=g, dtype=torch.float64)
    full = {"text": text, "audio": audio}
    audio_only = {"text": torch.zeros_like(text), "audio": audio}
    uncond = {"text": torch.zeros_like(text), "audio": torch.zeros_like(audio)}
    return x, t, full, audio_only, uncond


def _linear_model(calls: list):
    """``eps = 0.5 x + t + u(text) + v(audio)``: linear in each condition, so the text and audio effects are the
    two terms ``u = W_t text``, ``v = W_a audio`` (zeroed conditions contribute nothing)."""
    g = torch.Generator().manual_seed(1)
    w_text = torch.randn(D, C * T, generator=g, dtype=torch.float64)
    w_audio = torch.randn(D, C * T, generator=g, dtype=torch.float64)

    def model(x, t, cond):
        calls.append(x.shape[0])
        effect = (cond["text"] @ w_text + cond["audio"] @ w_audio).view(-1, C, T)
        return 0.5 * x + t.view(-1, 1, 1) + effect

    def terms(cond):
        return (cond["text"] @ w_text).view(-1, C, T), (cond["audio"] @ w_audio).view(-1, C, T)

    return model, terms


def _interacting_model(calls: list):
    """A non-linear toy: text and audio interact (``tanh`` of their product), so no branch equals another's sum."""

    def model(x, t, cond):
        calls.append(x.shape[0])
        text, audio = cond["text"].sum(1).view(-1, 1, 1), cond["audio"].sum(1).view(-1, 1, 1)
        return torch.tanh(x * (1 + text) * (1 - 0.5 * audio)) + t.view(-1, 1, 1) * text * audio + 0.1 * audio

    return model


@pytest.mark.parametrize("alpha, beta", [(3.0, 6.0), (2.0, 0.5), (0.4, 9.0), (-1.0, 2.0)])
def test_linear_denoiser_gives_the_exact_combination(alpha, beta):
    """For ``eps = base + u(text) + v(audio)``, the double guidance is ``base + alpha v + alpha beta u``: audio is
    guided by alpha, text by alpha * beta (the expanded form of the paper's formula), in one batched call of 3B."""
    calls: list = []
    model, terms = _linear_model(calls)
    x, t, full, audio_only, uncond = _inputs()
    u, v = terms(full)
    base = 0.5 * x + t.view(-1, 1, 1)
    calls.clear()
    guided = double_classifier_free(model, text_scale=beta, audio_scale=alpha, audio_only=audio_only,
                                    uncond=uncond)(x, t, full)
    assert calls == [3 * B]
    torch.testing.assert_close(guided, base + alpha * v + alpha * beta * u, rtol=1e-12, atol=1e-12)


def test_general_case_combines_three_separately_computed_branches():
    """On the interacting toy, the batched result equals ``e0 + a (ea + b (eta - ea) - e0)`` of three separate calls."""
    calls: list = []
    model = _interacting_model(calls)
    x, t, full, audio_only, uncond = _inputs(2)
    e_ta, e_a, e_0 = model(x, t, full), model(x, t, audio_only), model(x, t, uncond)
    calls.clear()
    guided = double_classifier_free(model, 6.0, 3.0, audio_only, uncond)(x, t, full)
    assert calls == [3 * B]
    torch.testing.assert_close(guided, e_0 + 3.0 * (e_a + 6.0 * (e_ta - e_a) - e_0), rtol=1e-12, atol=1e-12)


def test_each_scale_at_zero_and_one_reduces_to_single_guidance():
    """beta = 1: CFG on the joint condition at alpha; beta = 0: CFG by audio alone; alpha = 1: CFG of text over the
    audio-only model at beta; alpha = 0: the unconditional model; both 1: the conditional model itself."""
    calls: list = []
    model = _interacting_model(calls)
    x, t, full, audio_only, uncond = _inputs(3)
    e_ta, e_a, e_0 = model(x, t, full), model(x, t, audio_only), model(x, t, uncond)
    cases = {
        (1.0, 4.0): (e_0 + 4.0 * (e_ta - e_0), [2 * B]),
        (0.0, 4.0): (e_0 + 4.0 * (e_a - e_0), [2 * B]),
        (5.0, 1.0): (e_a + 5.0 * (e_ta - e_a), [2 * B]),
        (5.0, 0.0): (e_0, [B]),
        (1.0, 1.0): (e_ta, [B]),
        (0.0, 1.0): (e_a, [B]),
        (0.0, 0.0): (e_0, [B]),
    }
    for (beta, alpha), (expected, batches) in cases.items():
        calls.clear()
        got = double_classifier_free(model, beta, alpha, audio_only, uncond)(x, t, full)
        assert calls == batches, (beta, alpha)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12, msg=f"beta={beta}, alpha={alpha}")
    # beta = 1 is exactly single classifier-free guidance with the joint condition.
    single = classifier_free(model, 4.0, uncond)(x, t, full)
    torch.testing.assert_close(double_classifier_free(model, 1.0, 4.0, audio_only, uncond)(x, t, full), single)


def test_batches_conditioning_dataclasses():
    """The three conditionings of a :class:`Conditioning` (text + mask, audio in ``aligned``) batch field by field."""
    seen: list = []

    def model(x, t, cond: Conditioning):
        seen.append(cond)
        mask = cond.text_mask.to(x.dtype).mean(1).view(-1, 1, 1)
        return x * mask + cond.aligned.mean((1, 2)).view(-1, 1, 1)

    g = torch.Generator().manual_seed(4)
    x, t = torch.randn(B, 1, 6, generator=g), torch.full((B,), 0.5)
    text = torch.randn(B, 7, D, generator=g)
    full = Conditioning(text=text, text_mask=torch.ones(B, 7, dtype=torch.bool), aligned=torch.randn(B, 2, 6,
                                                                                                     generator=g))
    audio_only = full.without_text(torch.ones(B, dtype=torch.bool))
    uncond = Conditioning(text=torch.zeros_like(text), text_mask=torch.zeros(B, 7, dtype=torch.bool),
                          aligned=torch.zeros(B, 2, 6))
    guided = double_classifier_free(model, 2.0, 3.0, audio_only, uncond)(x, t, full)
    assert len(seen) == 1 and seen[0].text.shape == (3 * B, 7, D) and seen[0].aligned.shape == (3 * B, 2, 6)
    a = full.aligned.mean((1, 2)).view(-1, 1, 1)
    e_ta, e_a, e_0 = x + a, a.expand_as(x), torch.zeros_like(x)
    torch.testing.assert_close(guided, e_0 + 3.0 * (e_a + 2.0 * (e_ta - e_a) - e_0))


# ---------------------------------------------------------------------------------------------------------------------
# Independent dropout of the two conditions


def _draw(p_text: float, p_audio: float, batches: int = 200, batch: int = 256, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    pairs = [cfg_dropout_pair(batch, p_text, p_audio, g) for _ in range(batches)]
    return torch.cat([p[0] for p in pairs]).numpy(), torch.cat([p[1] for p in pairs]).numpy()


@pytest.mark.parametrize("p_text, p_audio", [(0.1, 0.1), (0.3, 0.5), (0.05, 0.9)])
def test_dropout_rates_match_the_configured_rates(p_text, p_audio):
    """Over 51,200 examples each mask's rate, and the rate of both dropped, lie inside the binomial test's 99.9%
    acceptance region of the configured rates (p_text, p_audio, p_text * p_audio)."""
    text, audio = _draw(p_text, p_audio)
    n = text.size
    for hits, p in ((text.sum(), p_text), (audio.sum(), p_audio), ((text & audio).sum(), p_text * p_audio),
                    ((text & ~audio).sum(), p_text * (1 - p_audio))):
        assert scipy.stats.binomtest(int(hits), n, p).pvalue > 1e-3, (hits / n, p)


def test_the_two_masks_are_independent():
    """A chi-square test of the 2x2 table does not reject independence, and the same test rejects it for two masks
    that share one draw (the check can fail)."""
    text, audio = _draw(0.3, 0.5, seed=5)
    table = np.array([[np.sum(~text & ~audio), np.sum(~text & audio)], [np.sum(text & ~audio), np.sum(text & audio)]])
    assert scipy.stats.chi2_contingency(table).pvalue > 1e-3
    u = torch.rand(51_200, generator=torch.Generator().manual_seed(5)).numpy()
    shared = np.array([[np.sum((u >= 0.3) & (u >= 0.5)), np.sum((u >= 0.3) & (u < 0.5))],
                       [np.sum((u < 0.3) & (u >= 0.5)), np.sum((u < 0.3) & (u < 0.5))]])
    assert scipy.stats.chi2_contingency(shared).pvalue < 1e-12


def test_dropout_is_seeded_exact_at_the_edges_and_checks_rates():
    a = cfg_dropout_pair(64, 0.4, 0.6, torch.Generator().manual_seed(7))
    b = cfg_dropout_pair(64, 0.4, 0.6, torch.Generator().manual_seed(7))
    c = cfg_dropout_pair(64, 0.4, 0.6, torch.Generator().manual_seed(8))
    assert all(torch.equal(x, y) for x, y in zip(a, b)) and not torch.equal(a[0], c[0])
    assert a[0].dtype == torch.bool and a[0].shape == a[1].shape == (64,)
    never, always = cfg_dropout_pair(100, 0.0, 1.0, torch.Generator().manual_seed(0))
    assert not never.any() and always.all()
    for bad in ((-0.1, 0.5), (0.5, 1.5), (float("nan"), 0.1)):
        with pytest.raises(ValueError):
            cfg_dropout_pair(4, *bad)
