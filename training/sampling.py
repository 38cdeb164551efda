"""The public sampling API: text prompts -> 30 s of 24 kHz music through a Noise2Music cascade.

::

    from n2m.training.sampling import Prompt, generate
    results = generate([Prompt("p1", "calm piano")], cascade="waveform", checkpoints="models/", seconds=30)
    results[0].audio  # float32 [T] at 24 kHz

Each stage samples with its own settings (:class:`StageSettings`: sampler, steps, step spacing, guidance, gamma/eta,
dynamic clipping, conditioning-augmentation level, windows), defaulting to the paper's (arXiv 2302.03917, table 7).
Every sample has its own seed, derived from ``(seed, prompt id, sample index)``, and its own random generators, so a
sample does not change with the batch size or the other prompts in the run. Stages trained on more than captions
(:mod:`n2m.training.conditioning`) also take an audio prompt (the joint model's embedding of an excerpt, with double
guidance when text comes too) and a melody. Cascaders and the vocoder process the
whole signal when memory allows and fall back to cross-faded windows otherwise (:mod:`n2m.training.windowing`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from n2m.audio import peak_db
from n2m.config import FRACTION, NONNEGATIVE, checked, number
from n2m.errors import UserError
from n2m.names import check_name
from n2m.provenance import versions
from n2m.training.cascade import StageModel, cascade_stages, check_cascade, load_stage, resolve_checkpoints
from n2m.training.conditioning import (
    AudioFile,
    check_prompting,
    joint_embedder,
    joint_model_dir,
    melody_input,
    prompt_conditioning,
)
from n2m.training.diffusion.guidance import CLIPS, make_clip
from n2m.training.diffusion.samplers import SAMPLERS, SPACINGS, get_sampler, make_steps, noise_like
from n2m.training.joint_bank import TextBridge
from n2m.training.lowfi import keep_input_band
from n2m.training.stages import get_stage
from n2m.training.text import TextEncoder, load_text_encoder
from n2m.training.windowing import whole_or_windowed, windowed

log = logging.getLogger(__name__)

FALLBACK_WINDOW_S = 8.0  # window length when the whole signal does not fit in memory
OVERLAP_S = 0.5
MAX_SECONDS = 600.0  # 20x the paper's 30 s clips; 100000 s would ask for tens of GB before the first step
SECONDS = number(float, low=0, high=MAX_SECONDS, low_open=True)
PRECISIONS = {"auto": "bf16 autocast on CUDA, fp32 elsewhere", "fp32": "no autocast", "bf16": "bf16 autocast"}


@dataclass(frozen=True)
class Prompt:
    """A prompt and its id (the stem of the files written for it; evaluation pairs audio and prompts by it)."""

    id: str
    text: str


@dataclass(frozen=True)
class StageSettings:
    """How one stage samples. ``None`` takes the paper's value for the stage (its ``StageSpec.sampling``).

    ``window_s``: None = whole signal, cross-faded windows of :data:`FALLBACK_WINDOW_S` on out-of-memory; 0 = whole
    only; > 0 = always windows of that length. ``aug_t``: the conditioning-augmentation level the low-fi input or
    spectrogram is diffused to (cascaders and vocoder).
    """

    sampler: str = "ancestral"
    steps: int | None = None
    spacing: str = "uniform"
    t_stop: float = 0.0  # > 0: the last step jumps from t_stop to 0 (samplers.make_steps)
    guidance: float | None = None
    audio_guidance: float | None = None  # the audio prompt's scale (n2m.training.conditioning.prompt_conditioning)
    gamma: float | None = None
    eta: float = 0.0
    clip: str = "dynamic"
    clip_percentile: float = 0.995
    aug_t: float = 0.0
    window_s: float | None = None
    overlap_s: float = OVERLAP_S
    keep_input_band: bool = False  # cascaders: the input's band kept in the output (n2m.training.lowfi.keep_input_band)

    def resolved(self, stage: str) -> StageSettings:
        """The paper's values filled in and every setting checked once (names in their registries, numbers finite
        and in range), each bad one a one-line :class:`UserError`."""
        for value, registry, what in ((self.sampler, SAMPLERS, "sampler"), (self.spacing, SPACINGS, "step spacing"),
                                      (self.clip, CLIPS, "clipping")):
            if value not in registry:
                raise UserError(f"unknown {what} {value!r}; choose from {', '.join(registry)}")
        paper = get_stage(stage).sampling
        out = replace(self, steps=paper.steps if self.steps is None else self.steps,
                      guidance=paper.guidance if self.guidance is None else self.guidance,
                      gamma=paper.gamma if self.gamma is None else self.gamma)
        rules = {"steps": number(int, low=2 if out.spacing == "log_snr" or out.t_stop else 1), "guidance": NONNEGATIVE,
                 "t_stop": number(float, 0, 1, high_open=True),
                 "gamma": NONNEGATIVE, "eta": NONNEGATIVE, "clip_percentile": number(float, 0, 1, low_open=True),
                 "aug_t": FRACTION, "overlap_s": NONNEGATIVE}
        checks = {name: checked(getattr(out, name), parse, f"{stage} {name}") for name, parse in rules.items()}
        if out.window_s is not None:
            checks["window_s"] = checked(out.window_s, NONNEGATIVE, f"{stage} window seconds")
        if out.audio_guidance is not None:
            checks["audio_guidance"] = checked(out.audio_guidance, NONNEGATIVE, f"{stage} audio guidance")
        return replace(out, **checks)

    def to_dict(self) -> dict[str, Any]:
        """The settings as a sample's sidecar records them (``sampler_settings``)."""
        return asdict(self)


@dataclass
class Result:
    """One generated sample: 24 kHz audio ``[T]`` float32, and for ``keep_stages`` the intermediate outputs
    (``stages[name] = (array, rate)``: audio ``[T]``, or a spectrogram ``[80, F]`` at 100 frames/s)."""

    id: str
    prompt: Prompt
    sample_index: int
    seed: int
    audio: np.ndarray
    sample_rate: int
    stages: dict[str, tuple[np.ndarray, int]] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)


def sample_seed(seed: int, prompt_id: str, index: int) -> int:
    """The 63-bit seed of one sample."""
    return int(hashlib.sha1(f"{seed}:{prompt_id}:{index}".encode()).hexdigest()[:15], 16)


def _stage_seed(item_seed: int, stage: str) -> int:
    return int(hashlib.sha1(f"{item_seed}:{stage}".encode()).hexdigest()[:15], 16)


def _per_stage(value: Any, stages: Sequence[str], name: str, default: Any = None) -> dict[str, Any]:
    """A value for every stage from one value or a ``{stage: value}`` mapping (unknown stages refused; stages the
    mapping leaves out get ``default``)."""
    if not isinstance(value, dict):
        return dict.fromkeys(stages, default if value is None else value)
    unknown = set(value) - set(stages)
    if unknown:
        raise UserError(f"{name} names stage {sorted(unknown)[0]!r}, not in this cascade ({', '.join(stages)})")
    return {s: value.get(s, default) for s in stages}


def stage_settings(
    stages: Sequence[str],
    *,
    sampler: str | dict[str, str] = "ancestral",
    steps: int | dict[str, int] | None = None,
    guidance: float | dict[str, float] | None = None,
    spacing: str | dict[str, str] = "uniform",
    t_stop: float | dict[str, float] = 0.0,
    window_s: float | dict[str, float] | None = None,
    audio_guidance: float | dict[str, float] | None = None,
    **common: Any,
) -> dict[str, StageSettings]:
    """Per-stage settings from run-wide or per-stage values; a single ``guidance`` (``audio_guidance``) applies to the
    text (audio-conditioned) stages."""
    samplers = _per_stage(sampler, stages, "sampler", "ancestral")
    spacings = _per_stage(spacing, stages, "spacing", "uniform")
    stops = _per_stage(t_stop, stages, "t_stop", 0.0)
    steps_, guid, windows, audio = (_per_stage(v, stages, n) for v, n in (
        (steps, "steps"), (guidance, "guidance"), (window_s, "window"), (audio_guidance, "audio guidance")))
    out = {}
    for stage in stages:
        out[stage] = StageSettings(sampler=samplers[stage], steps=steps_[stage], spacing=spacings[stage],
                                   t_stop=stops[stage], guidance=guid[stage], window_s=windows[stage], audio_guidance=audio[stage],
                                   **common).resolved(stage)
    return out


# ---------------------------------------------------------------------------------------------------------------------
# Running one stage on a batch


_ENCODERS: dict[tuple[str, int, str], TextEncoder] = {}  # kept across calls: evaluation calls generate() repeatedly


def text_encoder_for(model: StageModel, device: torch.device,
                     override: str | TextEncoder | None = None) -> TextEncoder:
    """The frozen text encoder of a text stage: ``override`` when it is a loaded encoder, else the ``KIND:DIR`` of
    ``override`` or the one the model records (found by path or content hash, :mod:`n2m.training.encoder_ref`), loaded
    once per process."""
    if isinstance(override, TextEncoder):
        return override
    spec = override or model.text_encoder_spec()
    if not spec:
        raise UserError(f"{model.path} is text-conditioned but records no text encoder: pass text_encoder")
    key = (spec, model.diffusion.token_length, str(device))
    if key not in _ENCODERS:
        _ENCODERS[key] = load_text_encoder(spec, key[1]).to(device)
    return _ENCODERS[key]


def _denoiser(model: StageModel, settings: StageSettings, stage_input, guide, autocast: bool):
    """``(x, t, cond) -> Prediction`` (eps and x0) of the model, evaluated whole or in windows, with guidance
    (``guide``: denoiser -> guided denoiser, or None) around it, so the windows cut the guided batch's conditioning
    (conditional and unconditional halves alike)."""
    device = next(model.model.net.parameters()).device

    def predict(x, t, cond):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            return model.denoiser.predict(x, t, cond)

    denoise = predict
    if stage_input.aligned and settings.window_s != 0:
        multiple = math.lcm(model.model.net.cfg.total_stride, stage_input.frame)  # whole network strides and frames
        window = max(1, round((settings.window_s or FALLBACK_WINDOW_S) * model.rate / multiple)) * multiple
        pieces = windowed(predict, window=window, overlap=round(settings.overlap_s * model.rate),
                          aligned=stage_input.aligned, multiple=stage_input.frame)
        denoise = whole_or_windowed(predict, pieces) if settings.window_s is None else pieces
    return guide(denoise) if guide is not None else denoise


@dataclass
class Extras:
    """What a run conditions on besides its prompts' text: an audio prompt and a melody
    (:class:`n2m.training.conditioning.AudioFile`), per stage the loaded joint model, and how text crosses to a joint
    embedding (:class:`n2m.training.joint_bank.TextBridge`)."""

    audio_prompt: AudioFile | None = None
    melody: AudioFile | None = None
    embedders: dict[str, Any] = field(default_factory=dict)
    bridge: TextBridge = field(default_factory=TextBridge)


def _run_stage(model: StageModel, settings: StageSettings, prev: torch.Tensor | None, texts: list[str],
               seeds: list[int], seconds: float, text_encoder: str | TextEncoder | None, autocast: bool,
               bar: tqdm, extras: Extras) -> tuple[torch.Tensor, dict[str, Any] | None]:
    """One stage on a batch: its output and the guidance it used (None for stages without text)."""
    if model.kind == "classical":  # nothing to sample: the inversion itself, each example with its own seed
        out = torch.cat([model.model.net(prev[i : i + 1].float(), seed=_stage_seed(s, model.stage))
                         for i, s in enumerate(seeds)])
        bar.update(settings.steps)
        return out, None
    device = next(model.model.net.parameters()).device
    gens = [torch.Generator(device=device).manual_seed(_stage_seed(s, model.stage)) for s in seeds]
    noise = lambda like: noise_like(like, gens)  # noqa: E731
    stage_input = get_stage(model.stage).inputs(model, prev, len(seeds), seconds, settings.aug_t, noise)
    cond, guide, scales = stage_input.cond, None, None
    if model.model.net.cfg.melody_channels > 0:
        cond = replace(cond, melody=melody_input(extras.melody, model.rate, stage_input.shape[-1], len(seeds), device))
    if model.conditioned:
        encoder = text_encoder_for(model, device, text_encoder) if model.model.net.cfg.text_dim > 0 else None
        cond, guide, scales = prompt_conditioning(cond, texts, encoder, extras.embedders.get(model.stage),
                                                  extras.audio_prompt, settings.guidance, settings.audio_guidance,
                                                  extras.bridge, model.model.joint_bank, model.stage,
                                                  model.conditioning.text_joint)
    x_t = noise_like(torch.empty(stage_input.shape, device=device), gens)
    fn, defaults = get_sampler(settings.sampler)
    options = {k: v for k, v in (("gamma", settings.gamma), ("eta", settings.eta)) if k in defaults}
    steps = make_steps(model.denoiser.schedule.alpha_bar, settings.steps, spacing=settings.spacing, t_stop=settings.t_stop)
    denoise = _denoiser(model, settings, stage_input, guide, autocast)
    clip = make_clip(settings.clip, settings.clip_percentile, model.denoiser.data_scale)
    out = model.denoiser.to_data(
        fn(denoise, x_t, steps, cond, clip=clip, generator=gens, callback=lambda info: bar.update(1), **options))
    if settings.keep_input_band and get_stage(model.stage).architecture.lowfi_channels > 0:
        out = keep_input_band(out, prev)
    return out, scales


# ---------------------------------------------------------------------------------------------------------------------
# The public entry point


def load_cascade(cascade: str, checkpoints: str | Path | dict[str, str | Path],
                 device: str | torch.device = "cpu") -> dict[str, StageModel]:
    """Load and check the stage models of a cascade (see :func:`n2m.training.cascade.resolve_checkpoints`)."""
    paths = resolve_checkpoints(cascade, checkpoints)
    models = {stage: load_stage(path, device) for stage, path in paths.items()}
    check_cascade(cascade, models)
    return models


def check_prompts(prompts: Sequence[str | Prompt]) -> list[Prompt]:
    """Prompts with ids (``0000``, ``0001``, ... for bare strings); every id must be unique and name a file
    (:func:`n2m.names.check_name`), else a one-line :class:`UserError`."""
    out = [p if isinstance(p, Prompt) else Prompt(f"{i:04d}", str(p)) for i, p in enumerate(prompts)]
    ids = [check_name(p.id, "prompt id") for p in out]
    if len(set(ids)) != len(ids):
        raise UserError("prompt ids must be unique")
    return out


@torch.no_grad()
def generate(
    prompts: Sequence[str | Prompt],
    cascade: str,
    checkpoints: str | Path | dict[str, str | Path] | dict[str, StageModel],
    *,
    seconds: float = 30.0,
    num_samples: int = 1,
    seed: int = 0,
    batch_size: int = 4,
    device: str | torch.device = "cpu",
    keep_stages: bool = False,
    settings: dict[str, StageSettings] | None = None,
    text_encoder: str | TextEncoder | None = None,
    precision: str = "auto",
    progress: bool = True,
    audio_prompt: AudioFile | None = None,
    melody: AudioFile | None = None,
    joint_model: str | None = None,
    text_bridge: TextBridge | None = None,
    **stage_options: Any,
) -> list[Result]:
    """Generate ``num_samples`` clips of ``seconds`` per prompt through the ``cascade`` (``waveform`` | ``spectrogram``).

    ``checkpoints``: a directory (see :func:`n2m.training.cascade.resolve_checkpoints`), ``{stage: path}``, or already
    loaded ``{stage: StageModel}``. Stage settings come from ``settings`` or from ``stage_options`` (``sampler``,
    ``steps``, ``guidance``, ``spacing``, ``window_s`` as one value or ``{stage: value}``; ``eta``, ``clip``,
    ``clip_percentile``, ``aug_t``, ``overlap_s`` for all stages). ``text_encoder`` (``KIND:DIR`` or a loaded
    :class:`n2m.training.text.TextEncoder`) replaces the one recorded in the checkpoints. ``precision``: ``fp32``, ``bf16`` (autocast) or ``auto`` (bf16 on CUDA).
    ``audio_prompt`` and ``melody`` (:func:`n2m.training.conditioning.read_audio_prompt`, ``read_audio_file``) condition
    the stages trained for them; ``joint_model`` is a directory to use for the joint model, refused unless it holds
    the one the stages were trained with; ``text_bridge`` says how a text prompt fills a joint-embedding stage's slot
    (default: through the stage's bank when it has one). Returns one :class:`Result` per (prompt, sample), prompt-major.
    """
    seconds = checked(seconds, SECONDS, "seconds")
    if num_samples < 1 or batch_size < 1:
        raise UserError("num_samples and batch_size must be positive")
    stages = cascade_stages(cascade)
    prompts = check_prompts(prompts)
    device = torch.device(device)
    if precision not in PRECISIONS:
        raise UserError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    settings = settings or stage_settings(stages, **stage_options)
    loaded = isinstance(checkpoints, dict) and checkpoints and all(isinstance(m, StageModel) for m in checkpoints.values())
    models = checkpoints if loaded else load_cascade(cascade, checkpoints, device)
    check_cascade(cascade, models)
    check_prompting(models, [p.text for p in prompts], audio_prompt, melody)
    bridge = text_bridge or TextBridge()
    if audio_prompt is None:
        for s, m in models.items():
            if m.conditioning.joint:
                bridge.mode_for(m.model.joint_bank, s, m.conditioning.text_joint)  # refuse an impossible bridge first
    extras = Extras(audio_prompt, melody, {
        s: joint_embedder(joint_model_dir(m.conditioning, s, m.path, joint_model), device)
        for s, m in models.items() if m.conditioning.joint}, bridge)
    settings = {s: v if models[s].conditioned else replace(v, guidance=1.0) for s, v in settings.items()}
    autocast = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    items = [(p, k, sample_seed(seed, p.id, k)) for p in prompts for k in range(num_samples)]
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    bars = {s: tqdm(total=settings[s].steps * len(batches), desc=s, unit="step", position=i, disable=not progress,
                    leave=True) for i, s in enumerate(stages)}
    results: list[Result] = []
    try:
        for batch in batches:
            texts, seeds = [p.text for p, _, _ in batch], [s for _, _, s in batch]
            outputs, timings, guidance, prev = {}, {}, {}, None
            for stage in stages:
                start = time.perf_counter()
                prev, guidance[stage] = _run_stage(models[stage], settings[stage], prev, texts, seeds, seconds,
                                                   text_encoder, autocast, bars[stage], extras)
                outputs[stage] = prev.float().cpu()  # waits for the device
                timings[stage] = time.perf_counter() - start
            results.extend(_results(batch, outputs, timings, models, settings, stages, seconds, keep_stages,
                                    num_samples, guidance, extras))
    finally:
        for bar in bars.values():
            bar.close()
    return results


def _results(batch, outputs, timings, models, settings, stages, seconds, keep_stages, num_samples, guidance,
             extras: Extras) -> list[Result]:
    final = stages[-1]
    rate = models[final].rate
    length = round(seconds * rate)
    meta = {
        "cascade_stages": list(stages),
        "seconds": seconds,
        "stages": {s: models[s].provenance() for s in stages},
        "settings": {s: settings[s].to_dict() for s in stages},
        "guidance": {s: g for s, g in guidance.items() if g is not None},
        "audio_prompt": extras.audio_prompt.describe() if extras.audio_prompt is not None else None,
        "melody": extras.melody.describe() if extras.melody is not None else None,
        "timing": {"batch_size": len(batch), "stage_seconds": {s: round(timings[s], 4) for s in stages}},
        "versions": versions(),
    }
    out = []
    for i, (prompt, index, item_seed) in enumerate(batch):
        kept = {s: (_as_array(outputs[s][i]), models[s].rate) for s in stages[:-1]} if keep_stages else {}
        audio, gain_db = fit_full_scale(outputs[final][i, 0, :length].numpy().astype(np.float32))
        out.append(Result(
            id=prompt.id if num_samples == 1 else f"{prompt.id}_{index}",
            prompt=prompt, sample_index=index, seed=item_seed, audio=audio, sample_rate=rate,
            stages=kept, metadata={**meta, "guidance": _item_guidance(meta["guidance"], i), "gain_db": gain_db}))
    return out


def fit_full_scale(audio: np.ndarray) -> tuple[np.ndarray, float]:
    """A clip ``[T]`` whose peak exceeds full scale, scaled down so its peak is 1, and the gain in dB applied (0.0 when
    it fits). With ``--clip none`` the final stage's output is not bounded; clamping it would clip every overshoot into
    a click, so the clip is normalised to its peak instead, as audiocraft's ``peak`` strategy writes audio."""
    over_db = peak_db(audio)
    if over_db <= 0.0:
        return audio, 0.0
    return audio / np.abs(audio).max(), round(-over_db, 4)


def _item_guidance(guidance: dict[str, dict[str, Any]], item: int) -> dict[str, dict[str, Any]]:
    """A batch's guidance record for its ``item``-th clip: a text bridge's matches are that clip's prompt's own."""
    out = dict(guidance)
    for stage, record in guidance.items():
        bridge = record.get("text_bridge") or {}
        if "matches" in bridge:
            out[stage] = {**record, "text_bridge": {**bridge, "matches": bridge["matches"][item]}}
    return out


def _as_array(signal: torch.Tensor) -> np.ndarray:
    """``[1, T]`` audio -> ``[T]``; a spectrogram ``[80, F]`` stays 2-D."""
    return (signal[0] if signal.shape[0] == 1 else signal).numpy().astype(np.float32)
