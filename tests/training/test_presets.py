"""The network presets (``tiny``, ``small``, ``paper``) of every stage: one factory, each preset's shape, the small
preset's sizing rules, per-stage overrides, and ``n2m train --preset small``."""

from __future__ import annotations

import math

import pytest
import torch

from n2m.cli import main
from n2m.training.networks.presets import PRESETS, Architecture, Size, build_network, count_parameters, network_config
from n2m.training.stages import STAGES

MINILM = 384  # the demo's text encoder width (all-MiniLM-L6-v2)
WAVEFORM = ("generator", "cascader", "sr_cascader")


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_has_every_preset_from_one_factory(stage, preset):
    spec = STAGES[stage]
    cfg = spec.network(preset, MINILM)
    depth = len(spec.architecture.channel_mults)
    levels = len(spec.architecture.preset_overrides.get(preset, {}).get("strides", ())) or PRESETS[preset].levels
    assert len(cfg.channel_mults) == min(levels or depth, depth)
    assert cfg.name == f"{stage}-{preset}"
    assert (cfg.text_dim > 0) == spec.text
    assert (cfg.lowfi_channels, cfg.aligned_channels) == (spec.architecture.lowfi_channels,
                                                          spec.architecture.aligned_channels)
    assert cfg.in_channels == spec.architecture.in_channels and cfg.out_channels == spec.architecture.out_channels
    assert any(cfg.cross_attention) == spec.text  # text stages attend to the text at their deepest levels
    if any(cfg.cross_attention):
        assert cfg.cross_attention[-1]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_small_has_a_few_million_parameters_and_self_attention_only_at_the_bottom(stage):
    cfg = STAGES[stage].network("small", MINILM)
    count = count_parameters(cfg)
    assert 2e6 < count < 12e6, count
    # the top level is at least as wide as the signal's channels (80 mel channels for the spectrogram generator)
    assert cfg.base_channels * cfg.channel_mults[0] >= cfg.in_channels
    if stage != "vocoder":  # the small vocoder is one level (test below)
        assert len(cfg.channel_mults) == 4 and cfg.num_res_blocks == [2, 2, 2, 2]
    assert not any(cfg.self_attention[:-1])
    bottom_rate = STAGES[stage].sample_rate / cfg.total_stride  # positions per second at the bottom
    assert bottom_rate <= 100  # a 10 s window is at most 1,000 tokens where self-attention may run
    assert cfg.self_attention[-1] == STAGES[stage].architecture.self_attention[-1]


@pytest.mark.parametrize("stage", WAVEFORM)
def test_small_waveform_levels_cost_about_the_same(stage):
    """Width doubles while the length quarters: channels^2 x length, the cost of a level's convolutions, is the same
    at every level (32^2 / 4 = 64^2 / 16 = 128^2 / 64 = 256^2 / 256 = 256 per input sample)."""
    cfg = STAGES[stage].network("small", MINILM)
    widths = [cfg.base_channels * m for m in cfg.channel_mults]
    assert widths == [32, 64, 128, 256] and cfg.strides == [4, 4, 4, 4]
    costs = [w * w / math.prod(cfg.strides[: i + 1]) for i, w in enumerate(widths)]
    assert costs == [256.0] * 4


def test_stage_overrides_keep_the_vocoder_at_the_mel_hop_and_widen_the_spectrogram_generator():
    for preset in PRESETS:
        assert STAGES["vocoder"].network(preset).total_stride == 160  # bottom at 100 frames/s
    small = STAGES["vocoder"].network("small")
    assert (small.strides, small.base_channels * small.channel_mults[0], small.num_res_blocks) == ([160], 256, [4])
    assert STAGES["vocoder"].network("paper").base_channels == 128
    spec = STAGES["spec_generator"].network("small", MINILM)
    assert (spec.base_channels, spec.channel_mults, spec.strides) == (96, [1, 2, 2, 3], [4, 3, 2, 2])
    assert (spec.input_skip, spec.input_skip_taps) == (True, 31)
    paper = STAGES["spec_generator"].network("paper", MINILM)
    assert (paper.input_skip, paper.input_skip_taps) == (False, 1)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_small_networks_map_a_window_to_the_same_shape(stage):
    cfg = STAGES[stage].network("small", MINILM)
    net = build_network(cfg)
    length = 2 * cfg.total_stride + 7  # padded inside to a multiple of the total stride
    batch = 2
    kw: dict = {}
    if cfg.text_dim:
        kw.update(text=torch.randn(batch, 5, cfg.text_dim), text_mask=torch.ones(batch, 5, dtype=torch.bool))
    if cfg.lowfi_channels:
        kw["lowfi"] = torch.randn(batch, cfg.lowfi_channels, length)
    if cfg.aligned_channels:
        kw["aligned"] = torch.randn(batch, cfg.aligned_channels, length // 160 + 1)
    if cfg.aug_conditioning:
        kw["aug_t"] = torch.rand(batch)
    with torch.no_grad():
        out = net(torch.randn(batch, cfg.in_channels, length), torch.rand(batch), **kw)
    assert out.shape == (batch, cfg.out_channels, length) and torch.isfinite(out).all()
    assert sum(p.numel() for p in net.parameters()) == count_parameters(cfg)


def test_factory_refusals():
    arch = STAGES["generator"].architecture
    with pytest.raises(KeyError, match="unknown preset 'huge'"):
        network_config(arch, "huge")
    short = Architecture(channel_mults=(1, 2, 3), strides=(4, 4, 4), num_res_blocks=(1, 1, 1),
                         self_attention=(False,) * 3, cross_attention=(False,) * 3, text=False)
    PRESETS["_two_widths"] = Size(base_channels=8, num_heads=1, cond_dim=8, norm_groups=1, width_mults=(1, 2))
    try:
        with pytest.raises(ValueError, match="2 width multipliers for 3 levels"):
            network_config(short, "_two_widths")
    finally:
        del PRESETS["_two_widths"]


def test_train_dry_run_takes_the_small_preset(capsys):
    assert main(["train", "--stage", "sr_cascader", "--build", "nowhere", "--preset", "small", "--out", "nowhere",
                 "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "preset: small" in out
    assert f"parameters: {count_parameters(STAGES['sr_cascader'].network('small'))}" in out
