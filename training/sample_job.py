"""The ``n2m sample`` job: text prompts -> 24 kHz wav files through a Noise2Music cascade, with a JSON sidecar per file.

Stages trained on more than captions (:mod:`n2m.training.conditioning`) also take ``--audio-prompt FILE`` (the joint
model's embedding of an excerpt of FILE, alone or with a text prompt: then double classifier-free guidance, ``--guidance``
for the text and ``--audio-guidance`` for the audio) and ``--melody FILE`` (its melody, from its start, trimmed or
padded to the clip). A text prompt reaches an audio-embedding stage through ``--text-bridge`` (default: the mean of the
``--bridge-neighbours`` training clips' embeddings nearest the prompt's, :mod:`n2m.training.joint_bank`). The sidecar
names both files (path and SHA-256), each stage's guidance scales and the bridge with the clips it matched.

Output, per prompt id (per sample ``K`` with ``--num-samples`` > 1: ``ID_K``): ``OUT/ID.wav`` (24 kHz, 16-bit) and
``OUT/ID.json`` (prompt, id, seeds, the stage models with their SHA-1, sampler settings, lineage: build ids and label
sets of the models, versions, and ``gain_db``: below 0 where the clip peaked above full scale and was scaled down
rather than clipped). ``--keep-stages`` adds the intermediate outputs: ``ID.3k2.wav`` (waveform generator),
``ID.mel.npy`` (spectrogram generator, ``[80, frames]``) and ``ID.16k.wav`` (cascader or vocoder). Files that already
exist are skipped unless ``--overwrite``: every sample has its own seed, so an interrupted run resumes exactly.

The job is :func:`run_sample` of :class:`SampleSettings` (the command line: :mod:`n2m.training.sample_cli`).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from n2m.config import NONNEGATIVE, POSITIVE_INT, number, resolved
from n2m.errors import UserError
from n2m.progress import honours_quiet
from n2m.schema import sidecar_path
from n2m.training.cascade import cascade_stages, checkpoint_spec, per_stage
from n2m.training.conditioning import DEFAULT_PROMPT_SECONDS, read_audio_file, read_audio_prompt
from n2m.training.joint_bank import DEFAULT_NEIGHBOURS, TextBridge
from n2m.training.sample_files import write_result

T_STOP = number(float, 0, 1, high_open=True)  # --t-stop: a noise level in [0, 1)


@dataclass(frozen=True, kw_only=True)
class SampleSettings:
    """What ``n2m sample`` does: one field per option (``n2m sample --help`` says what each means). The prompts are
    ``prompts`` (texts, ids 0000, 0001, ...) or ``prompts_file``, or none with an ``audio_prompt``; the per-stage
    sampling fields take ``"V"`` or ``"stage=V,..."`` (default: the paper's per stage)."""

    prompts: list[str] | None = None
    prompts_file: str | None = None
    cascade: str
    checkpoints: str
    out: str
    seconds: float = 30.0
    num_samples: int = 1
    seed: int = 0
    keep_stages: bool = False
    overwrite: bool = False
    text_encoder: str | None = None
    audio_prompt: str | None = None
    audio_prompt_seconds: float = DEFAULT_PROMPT_SECONDS
    audio_guidance: str | None = None
    melody: str | None = None
    joint_model: str | None = None
    text_bridge: str | None = None
    bridge_neighbours: int = DEFAULT_NEIGHBOURS
    sampler: str = "ancestral"
    steps: str | None = None
    guidance: str | None = None
    spacing: str = "uniform"
    t_stop: str | None = None
    gamma: float | None = None
    eta: float = 0.0
    clip: str = "dynamic"
    clip_percentile: float = 0.995
    aug_t: float = 0.0
    keep_input_band: bool = False
    window_seconds: str | None = None
    batch_size: int = 4
    device: str = "auto"
    precision: str = "auto"
    quiet: bool = False

    def __post_init__(self) -> None:
        if not (self.prompts or self.prompts_file or self.audio_prompt):
            raise UserError("give --prompts, --prompts-file or --audio-prompt")
        if self.prompts and self.prompts_file:
            raise UserError("--prompts and --prompts-file exclude each other")


# ---------------------------------------------------------------------------------------------------------------------
# Reading


def read_prompts(path: str) -> list[Any]:
    """Prompts from a text file (one per line) or JSON lines with ``id`` and ``text``."""
    from n2m.training.sampling import Prompt

    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise UserError(f"cannot read prompts file {path}: {err.strerror}") from err
    prompts = []
    for line_no, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        if not line.startswith("{"):
            prompts.append(Prompt(f"{len(prompts):04d}", line))
            continue
        try:
            row = json.loads(line)
            prompts.append(Prompt(str(row["id"]), str(row["text"])))
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise UserError(f"{path}:{line_no}: a JSON line needs 'id' and 'text' ({err})") from err
    if not prompts:
        raise UserError(f"{path} holds no prompts")
    return prompts


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available")
    return name


# ---------------------------------------------------------------------------------------------------------------------
# Running


@honours_quiet
def run_sample(settings: SampleSettings) -> int:
    """Sample every prompt whose files are not there yet (all with ``overwrite``); write each clip, its sidecar and
    (with ``keep_stages``) the intermediate outputs; print a summary."""
    from n2m.training.sampling import Prompt, check_prompts, generate, load_cascade, stage_settings

    texts = settings.prompts or ([] if settings.prompts_file else [""])  # an audio prompt alone: one prompt without text
    prompts = check_prompts(read_prompts(settings.prompts_file) if settings.prompts_file else [
        Prompt(f"{i:04d}", text) for i, text in enumerate(texts)])
    audio_prompt = read_audio_prompt(settings.audio_prompt, settings.audio_prompt_seconds) if settings.audio_prompt else None
    melody = read_audio_file(settings.melody, "--melody") if settings.melody else None
    bridge = TextBridge(settings.text_bridge, settings.bridge_neighbours)
    options = {
        "sampler": per_stage(settings.sampler, str, "sampler"),
        "steps": per_stage(settings.steps, POSITIVE_INT, "steps"),
        "guidance": per_stage(settings.guidance, NONNEGATIVE, "guidance"),
        "audio_guidance": per_stage(settings.audio_guidance, NONNEGATIVE, "audio-guidance"),
        "spacing": per_stage(settings.spacing, str, "spacing"),
        "t_stop": per_stage(settings.t_stop, T_STOP, "t-stop") or 0.0,
        "window_s": per_stage(settings.window_seconds, NONNEGATIVE, "window-seconds"),
        "eta": settings.eta, "clip": settings.clip, "clip_percentile": settings.clip_percentile, "aug_t": settings.aug_t,
        "keep_input_band": settings.keep_input_band,
    }
    if settings.gamma is not None:
        options["gamma"] = settings.gamma
    stages = stage_settings(cascade_stages(settings.cascade), **options)  # every number checked before any work
    out = Path(settings.out)
    out.mkdir(parents=True, exist_ok=True)
    ids = lambda p: [p.id] if settings.num_samples == 1 else [f"{p.id}_{k}" for k in range(settings.num_samples)]  # noqa: E731
    todo = [p for p in prompts if settings.overwrite or not all(sidecar_path(out / f"{i}.wav").is_file() for i in ids(p))]
    skipped = len(prompts) - len(todo)
    if not todo:
        print(f"n2m sample: all {len(prompts)} prompts already have their files in {out} (use --overwrite)")
        return 0
    device = _device(settings.device)
    config = {k: v for k, v in resolved(settings).items() if k != "prompts"}  # each sidecar names its own prompt
    start = time.perf_counter()
    models = load_cascade(settings.cascade, checkpoint_spec(settings.checkpoints), device)
    results = generate(todo, settings.cascade, models, seconds=settings.seconds, num_samples=settings.num_samples, seed=settings.seed,
                       batch_size=settings.batch_size, device=device, keep_stages=settings.keep_stages, settings=stages,
                       text_encoder=settings.text_encoder, precision=settings.precision, progress=not settings.quiet,
                       audio_prompt=audio_prompt, melody=melody, joint_model=settings.joint_model,
                       text_bridge=bridge)
    for result in results:
        write_result(out, result, config)
    elapsed = time.perf_counter() - start
    audio_s = sum(len(r.audio) / r.sample_rate for r in results)
    print(f"n2m sample: {len(results)} clips ({audio_s:.0f} s of 24 kHz audio) from {len(todo)} prompts in "
          f"{elapsed:.1f} s ({audio_s / elapsed:.2f} s of audio per second) -> {out}"
          + (f"; {skipped} prompts already done" if skipped else "") + _scaled_note(results))
    return 0


def _scaled_note(results: list) -> str:
    """The summary's note on clips whose peak went past full scale and were scaled down (empty when none did)."""
    gains = [r.metadata["gain_db"] for r in results if r.metadata.get("gain_db")]
    return f"; {len(gains)} clips peaked above full scale and were scaled down (down to {min(gains):.1f} dB)" if gains else ""
