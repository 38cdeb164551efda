"""The 1D Efficient U-Net: shapes for every stage preset, paper parameter counts, masks and conditioning hooks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from n2m.training.networks.presets import build_network, count_parameters
from n2m.training.networks.unet1d import UNetConfig
from n2m.training.stages import STAGES

PAPER_PARAMS = {"generator": 724e6, "cascader": 487e6, "sr_cascader": 81e6}  # Noise2Music table 7
WAVEFORM = ("generator", "cascader", "sr_cascader")


def _inputs(cfg: UNetConfig, batch: int, length: int, tokens: int = 7, device: str = "cpu") -> dict:
    g = torch.Generator().manual_seed(0)
    kw: dict = {}
    if cfg.text_dim:
        kw["text"] = torch.randn(batch, tokens, cfg.text_dim, generator=g).to(device)
        kw["text_mask"] = torch.ones(batch, tokens, dtype=torch.bool).to(device)
    if cfg.lowfi_channels:
        kw["lowfi"] = torch.randn(batch, cfg.lowfi_channels, length, generator=g).to(device)
    if cfg.aug_conditioning:
        kw["aug_t"] = torch.rand(batch, generator=g).to(device)
    return kw


def _randomise(net: torch.nn.Module) -> torch.nn.Module:
    """Give the zero-initialised layers random weights, so every input can reach the output."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    return net


@pytest.mark.parametrize("stage", WAVEFORM)
@pytest.mark.parametrize("length", [1000, 1024, 37])
def test_tiny_presets_map_any_length_to_the_same_length(stage, length):
    cfg = STAGES[stage].network("tiny", 24)
    net = _randomise(build_network(cfg))
    x = torch.randn(2, 1, length, requires_grad=True)
    out = net(x, torch.rand(2), **_inputs(cfg, 2, length))
    assert out.shape == (2, 1, length) and torch.isfinite(out).all()
    out.square().mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_fresh_network_outputs_zero_and_depends_on_input_after_training_starts():
    cfg = STAGES["generator"].network("tiny", 8)
    net = build_network(cfg)
    x = torch.randn(1, 1, 64)
    assert torch.equal(net(x, torch.rand(1), **_inputs(cfg, 1, 64)), torch.zeros_like(x))  # zero-init head


@pytest.mark.parametrize("stage", WAVEFORM)
def test_paper_presets_count_within_ten_percent_of_the_paper(stage):
    cfg = STAGES[stage].network("paper")
    assert cfg.base_channels == 256 and cfg.strides == [4] * len(cfg.channel_mults)
    count = count_parameters(cfg)
    assert abs(count - PAPER_PARAMS[stage]) / PAPER_PARAMS[stage] < 0.10, count


def test_paper_channel_layouts_and_attention_follow_the_paper():
    assert STAGES["generator"].network("paper").channel_mults == [1, 1, 2, 3, 4, 4]
    assert STAGES["cascader"].network("paper").channel_mults == [1, 1, 2, 3, 4]
    assert STAGES["sr_cascader"].network("paper").channel_mults == [1, 1, 2, 2]
    gen = STAGES["generator"].network("paper")
    assert gen.self_attention[-1] and gen.cross_attention[-1] and not gen.self_attention[0]
    assert not any(STAGES["cascader"].network("paper").self_attention)
    sr = STAGES["sr_cascader"].network("paper")
    assert not any(sr.self_attention + sr.cross_attention) and sr.text_dim == 0


def test_smallest_paper_preset_runs_on_cpu():
    cfg = STAGES["sr_cascader"].network("paper")
    net = build_network(cfg)
    assert sum(p.numel() for p in net.parameters()) == count_parameters(cfg)  # meta count == real count
    with torch.no_grad():
        out = net(torch.randn(1, 1, 600), torch.rand(1), **_inputs(cfg, 1, 600))
    assert out.shape == (1, 1, 600) and torch.isfinite(out).all()


@pytest.mark.parametrize("stage", ["generator", "cascader"])
def test_large_paper_presets_forward_on_meta(stage):
    cfg = STAGES[stage].network("paper")
    net = build_network(cfg, "meta")
    length = 3 * cfg.total_stride + 5
    out = net(torch.empty(2, 1, length, device="meta"), torch.empty(2, device="meta"),
              **_inputs(cfg, 2, length, device="meta"))
    assert out.shape == (2, 1, length) and out.device.type == "meta"


def test_cross_attention_ignores_padding_and_empty_masks_mean_unconditional():
    cfg = STAGES["cascader"].network("tiny", 16)
    net = _randomise(build_network(cfg)).eval()
    kw = _inputs(cfg, 3, 256, tokens=6)
    x, t = torch.randn(3, 1, 256), torch.rand(3)
    kw["text_mask"][:, 4:] = False
    base = net(x, t, **kw)
    changed = dict(kw, text=kw["text"].clone())
    changed["text"][:, 4:] = 100.0  # padded positions: must not matter
    assert torch.allclose(net(x, t, **changed), base, atol=1e-5)
    empty_a = dict(kw, text_mask=torch.zeros_like(kw["text_mask"]))
    empty_b = dict(empty_a, text=torch.randn_like(kw["text"]))
    a, b = net(x, t, **empty_a), net(x, t, **empty_b)
    assert torch.allclose(a, b, atol=1e-5)  # no tokens: the text content is irrelevant
    assert not torch.allclose(a, base, atol=1e-3)  # ... and the output differs from the conditional one


def test_aligned_conditioning_enters_at_the_bottom():
    cfg = UNetConfig(base_channels=8, channel_mults=[1, 2], strides=[2, 4], num_res_blocks=[1, 1],
                     self_attention=[False, False], cross_attention=[False, False], aligned_channels=3,
                     aug_conditioning=True, norm_groups=4)
    net = _randomise(build_network(cfg)).eval()
    x, t, aug = torch.randn(2, 1, 80), torch.rand(2), torch.rand(2)
    aligned = torch.randn(2, 3, 10)  # bottom length 80 / 8
    out = net(x, t, aligned=aligned, aug_t=aug)
    assert out.shape == (2, 1, 80)
    assert not torch.allclose(out, net(x, t, aligned=torch.randn(2, 3, 10), aug_t=aug))
    assert net(x, t, aligned=torch.randn(2, 3, 7), aug_t=aug).shape == (2, 1, 80)  # resampled to the bottom length
    with pytest.raises(ValueError):
        net(x, t, aug_t=aug)


@pytest.mark.parametrize("tokens", [1, 3])
def test_joint_tokens_are_layer_normed_slices_of_one_projection(tokens):
    """``joint_tokens = J``: the joint embedding ``[B, D]`` becomes J cross-attention tokens, token j the layer norm of
    rows j*C..(j+1)*C of one linear map (numpy, from the weights), all masked by the embedding's mask; their mean feeds
    the pooled path. J = 1 keeps the weight shapes of the networks written before the field."""
    cfg = UNetConfig(base_channels=8, channel_mults=[1, 2], strides=[2, 4], num_res_blocks=[1, 1],
                     self_attention=[False, False], cross_attention=[False, True], joint_dim=6, joint_tokens=tokens,
                     cond_dim=16, num_heads=2, norm_groups=4)
    net = _randomise(build_network(cfg)).eval()
    weight, bias = (p.detach().numpy() for p in net.joint_proj[0].parameters())
    assert weight.shape == (tokens * 16, 6)
    joint, t = torch.randn(2, 6), torch.rand(2)
    mask = torch.tensor([True, False])
    emb, states, states_mask = net._embedding(t, None, None, None, joint, mask)
    rows = (joint.numpy() @ weight.T + bias).reshape(2, tokens, 16)
    normed = (rows - rows.mean(-1, keepdims=True)) / np.sqrt(rows.var(-1, keepdims=True) + 1e-5)
    gain, shift = (p.detach().numpy() for p in net.joint_proj[1].parameters())
    expected = normed * gain + shift
    np.testing.assert_allclose(states.detach().numpy(), expected, atol=1e-5)
    assert states_mask.tolist() == [[True] * tokens, [False] * tokens]
    pooled = net.joint_pool(torch.from_numpy(expected.mean(1)).float()).detach()
    torch.testing.assert_close(emb, net.time_embedding(t) + pooled * mask[:, None], atol=1e-5, rtol=1e-5)
    x = torch.randn(2, 1, 80)
    assert net(x, t, joint=joint, joint_mask=torch.ones(2, dtype=torch.bool)).shape == (2, 1, 80)
    with pytest.raises(ValueError, match="joint_tokens"):
        UNetConfig(**{**cfg.to_dict(), "joint_tokens": 0})


def test_config_round_trip_and_validation():
    cfg = STAGES["generator"].network("tiny", 8)
    assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError):
        UNetConfig.from_dict({**cfg.to_dict(), "strides": [4]})
    with pytest.raises(ValueError):
        UNetConfig.from_dict({**cfg.to_dict(), "colour": "blue"})


def test_input_skip_hands_x_t_to_the_output_through_a_gain_of_the_embedding():
    """Off at initialisation (the output equals the same network's without the path); with the head silenced and the
    gain's bias at g, the output is exactly ``g * x_t``, whatever the rest of the network does."""
    base = STAGES["spec_generator"].network("tiny", 8)
    assert not base.input_skip and STAGES["spec_generator"].network("small", 8).input_skip
    cfg = UNetConfig.from_dict({**base.to_dict(), "input_skip": True})
    plain, skip = build_network(base), build_network(cfg)
    skip.load_state_dict(_randomise(plain).state_dict(), strict=False)
    x, t = torch.randn(2, 80, 40), torch.rand(2)
    torch.testing.assert_close(skip(x, t, **_inputs(cfg, 2, 40)), plain(x, t, **_inputs(cfg, 2, 40)))
    gain = torch.linspace(-1.0, 2.0, 80)
    with torch.no_grad():
        skip.head.weight.zero_(), skip.head.bias.zero_(), skip.input_gate.bias.copy_(gain)
    torch.testing.assert_close(skip(x, t, **_inputs(cfg, 2, 40)), gain[None, :, None] * x)
    with pytest.raises(ValueError, match="input_skip"):
        build_network(UNetConfig.from_dict({**STAGES["generator"].network("tiny", 8).to_dict(), "input_skip": True,
                                            "out_channels": 2}))


def test_input_skip_taps_filter_x_t_along_time_per_channel():
    """With taps, the path is a per-channel FIR filter of x_t over time (zero-padded, centred), its taps the gate's
    output: checked against a loop over frames in numpy. Old checkpoints (one tap) keep their gate's shape."""
    cfg = UNetConfig.from_dict({**STAGES["spec_generator"].network("tiny", 8).to_dict(), "input_skip": True,
                                "input_skip_taps": 5})
    net = build_network(cfg)
    assert net.input_gate.out_features == 80 * 5
    kernel = torch.randn(80, 5)
    with torch.no_grad():
        net.head.weight.zero_(), net.head.bias.zero_(), net.input_gate.weight.zero_()
        net.input_gate.bias.copy_(kernel.reshape(-1))
    x, t = torch.randn(2, 80, 40), torch.rand(2)
    xs, k = x.numpy().astype(np.float64), kernel.numpy().astype(np.float64)
    expected = np.zeros_like(xs)
    for frame in range(40):
        for tap in range(5):
            source = frame + tap - 2
            if 0 <= source < 40:
                expected[:, :, frame] += k[None, :, tap] * xs[:, :, source]
    np.testing.assert_allclose(net(x, t, **_inputs(cfg, 2, 40)).detach().numpy(), expected, rtol=1e-4, atol=1e-5)
    for taps in (0, 4):
        with pytest.raises(ValueError, match="input_skip_taps"):
            UNetConfig.from_dict({**cfg.to_dict(), "input_skip_taps": taps})
    written_before = {k: v for k, v in cfg.to_dict().items() if k != "input_skip_taps"}
    assert build_network(UNetConfig.from_dict(written_before)).input_gate.out_features == 80
