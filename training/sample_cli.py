"""``n2m sample``: text prompts -> 24 kHz wav files through a Noise2Music cascade, with a JSON sidecar per file.

Stages trained on more than captions (:mod:`training.conditioning`) also take ``--audio-prompt FILE`` (the joint
model's embedding of an excerpt of FILE, alone or with a text prompt: then double classifier-free guidance, ``--guidance``
for the text and ``--audio-guidance`` for the audio) and ``--melody FILE`` (its melody, from its start, trimmed or
padded to the clip). The sidecar names both files (path and SHA-256) and each stage's guidance scales.

Output, per prompt id (per sample ``K`` with ``--num-samples`` > 1: ``ID_K``): ``OUT/ID.wav`` (24 kHz, 16-bit) and
``OUT/ID.json`` (prompt, id, seeds, the stage models with their SHA-1, sampler settings, lineage: build ids and label
sets of the models, versions). ``--keep-stages`` adds the intermediate outputs: ``ID.3k2.wav`` (waveform generator),
``ID.mel.npy`` (spectrogram generator, ``[80, frames]``) and ``ID.16k.wav`` (cascader or vocoder). Files that already
exist are skipped unless ``--overwrite``: every sample has its own seed, so an interrupted run resumes exactly.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from n2m.config import FRACTION, NONNEGATIVE, POSITIVE, POSITIVE_INT, leaf, number, resolved
from n2m.errors import UserError
from n2m.schema import sidecar_path
from training.cascade import CASCADES, cascade_stages, checkpoint_spec, per_stage
from training.conditioning import DEFAULT_PROMPT_SECONDS, DOUBLE_AUDIO_GUIDANCE, read_audio_file, read_audio_prompt
from training.diffusion.guidance import CLIPS
from training.diffusion.samplers import SAMPLERS, SPACINGS
from training.sample_files import write_result
from training.sampling import MAX_SECONDS, PRECISIONS, SECONDS
from training.stages import STAGES


def _paper(field: str) -> str:
    """The paper's value of a sampling setting per stage (``StageSpec.sampling``), for the help."""
    return ", ".join(f"{name} {getattr(stage.sampling, field):g}" for name, stage in STAGES.items())


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.ArgumentDefaultsHelpFormatter
    what = parser.add_argument_group("what to generate")
    src = what.add_mutually_exclusive_group()
    src.add_argument("--prompts", nargs="+", metavar="TEXT", help="prompts (ids 0000, 0001, ... in order)")
    src.add_argument("--prompts-file", metavar="FILE",
                     help="one prompt per line, or JSON lines with 'id' and 'text' (the id names the output files: "
                          "no '/', no leading dot, no control characters)")
    what.add_argument("--cascade", required=True, choices=list(CASCADES),
                      help="; ".join(f"{name}: {' -> '.join(stages)}" for name, stages in CASCADES.items()))
    what.add_argument("--checkpoints", required=True, metavar="DIR|STAGE=PATH,...",
                      help="a directory holding STAGE/ (n2m export), STAGE.ckpt or STAGE/checkpoints/ for each stage, "
                           "or stage=path pairs separated by commas; vocoder=griffin-lim puts the classical Griffin-Lim "
                           "inversion (nothing to train) in the spectrogram cascade's vocoder slot")
    what.add_argument("--out", required=True, metavar="DIR", help="output directory")
    what.add_argument("--seconds", type=SECONDS, default=30.0,
                      help=f"length of each clip (at most {MAX_SECONDS:g} s)")
    what.add_argument("--num-samples", type=POSITIVE_INT, default=1, help="clips per prompt")
    what.add_argument("--seed", type=int, default=0, help="run seed; each clip's seed derives from it and its id")
    what.add_argument("--keep-stages", action="store_true", help="also write the intermediate stages' outputs")
    what.add_argument("--overwrite", action="store_true", help="regenerate clips whose files exist")
    what.add_argument("--text-encoder", metavar="KIND:DIR", help="text encoder to use instead of the checkpoints' own")

    extra = parser.add_argument_group("conditioning beyond text (stages trained with --condition ... or --melody)")
    extra.add_argument("--audio-prompt", metavar="FILE",
                       help="condition on the joint model's audio embedding of an excerpt of FILE (stages trained with "
                            "--condition audio-embedding or text+audio-embedding); with a text prompt as well, double "
                            "classifier-free guidance (text+audio-embedding stages); alone, no --prompts needed")
    extra.add_argument("--audio-prompt-seconds", type=POSITIVE, default=DEFAULT_PROMPT_SECONDS, metavar="S",
                       help="length of the excerpt, taken at the centre of FILE (one joint-model window by default)")
    extra.add_argument("--audio-guidance", metavar="W|STAGE=W,...",
                       help="guidance scale of the audio prompt, >= 0 (default: --guidance's with the audio prompt "
                            f"alone, {DOUBLE_AUDIO_GUIDANCE:g} with text too: MusicGen-Style's alpha, which also "
                            "multiplies the text's scale)")
    extra.add_argument("--melody", metavar="FILE",
                       help="melody source for generators trained with --melody: the chroma of FILE from its start, "
                            "trimmed or zero-padded to --seconds")
    extra.add_argument("--joint-model", metavar="DIR",
                       help="where the stages' joint model is now (refused unless it holds the content they were "
                            "trained with; default: the recorded path, or a folder with that content near the models)")

    how = parser.add_argument_group("sampling (one value for every stage, or stage=value,... ; default: the paper's)")
    how.add_argument("--sampler", default="ancestral", metavar="NAME|STAGE=NAME,...",
                     help=f"one of {', '.join(SAMPLERS)} (ancestral: Noise2Music's, with the stage's gamma; ddim; "
                          "dpmpp: DPM-Solver++(2M))")
    how.add_argument("--steps", metavar="N|STAGE=N,...", help=f"sampling steps, at least 1 (paper: {_paper('steps')})")
    how.add_argument("--guidance", metavar="G|STAGE=G,...",
                     help="classifier-free guidance scale, a finite number >= 0; one value applies to the text stages "
                          f"(paper: {_paper('guidance')})")
    how.add_argument("--spacing", default="uniform", metavar="NAME|STAGE=NAME,...",
                     help=f"step spacing, one of {', '.join(SPACINGS)} (front_heavy: short steps at high noise)")
    how.add_argument("--gamma", type=NONNEGATIVE,
                     help=f"ancestral stochasticity for every stage (paper: {_paper('gamma')})")
    how.add_argument("--eta", type=NONNEGATIVE, default=0.0, help="DDIM stochasticity")
    how.add_argument("--clip", default="dynamic", choices=list(CLIPS),
                     help="x0 clipping: dynamic (Imagen's dynamic thresholding), static ([-1, 1]) or none")
    how.add_argument("--clip-percentile", type=number(float, low=0, high=1, low_open=True), default=0.995, help="dynamic clipping percentile")
    how.add_argument("--aug-t", type=FRACTION, default=0.0, help="noise level of the cascaders' and vocoder's conditioning")
    how.add_argument("--window-seconds", metavar="S|STAGE=S,...",
                     help="cascaders/vocoder: process in cross-faded windows of S seconds (0 = whole; default: whole, "
                          "windows if out of memory)")

    run = parser.add_argument_group("hardware")
    run.add_argument("--batch-size", type=POSITIVE_INT, default=4, help="clips sampled together")
    run.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda when available)")
    run.add_argument("--precision", default="auto", choices=list(PRECISIONS),
                     help="; ".join(f"{name}: {what}" for name, what in PRECISIONS.items()))
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    leaf(parser, run_sample)


# ---------------------------------------------------------------------------------------------------------------------
# Parsing


def read_prompts(path: str) -> list[Any]:
    """Prompts from a text file (one per line) or JSON lines with ``id`` and ``text``."""
    from training.sampling import Prompt

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
# Writing


# ---------------------------------------------------------------------------------------------------------------------
# Running


def run_sample(args: argparse.Namespace) -> int:
    from training.sampling import Prompt, check_prompts, generate, load_cascade, stage_settings

    if not (args.prompts or args.prompts_file or args.audio_prompt):
        raise UserError("give --prompts, --prompts-file or --audio-prompt")
    texts = args.prompts or ([] if args.prompts_file else [""])  # an audio prompt alone: one prompt without text
    prompts = check_prompts(read_prompts(args.prompts_file) if args.prompts_file else [
        Prompt(f"{i:04d}", text) for i, text in enumerate(texts)])
    audio_prompt = read_audio_prompt(args.audio_prompt, args.audio_prompt_seconds) if args.audio_prompt else None
    melody = read_audio_file(args.melody, "--melody") if args.melody else None
    options = {
        "sampler": per_stage(args.sampler, str, "sampler"),
        "steps": per_stage(args.steps, POSITIVE_INT, "steps"),
        "guidance": per_stage(args.guidance, NONNEGATIVE, "guidance"),
        "audio_guidance": per_stage(args.audio_guidance, NONNEGATIVE, "audio-guidance"),
        "spacing": per_stage(args.spacing, str, "spacing"),
        "window_s": per_stage(args.window_seconds, NONNEGATIVE, "window-seconds"),
        "eta": args.eta, "clip": args.clip, "clip_percentile": args.clip_percentile, "aug_t": args.aug_t,
    }
    if args.gamma is not None:
        options["gamma"] = args.gamma
    settings = stage_settings(cascade_stages(args.cascade), **options)  # every number checked before any work
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ids = lambda p: [p.id] if args.num_samples == 1 else [f"{p.id}_{k}" for k in range(args.num_samples)]  # noqa: E731
    todo = [p for p in prompts if args.overwrite or not all(sidecar_path(out / f"{i}.wav").is_file() for i in ids(p))]
    skipped = len(prompts) - len(todo)
    if not todo:
        print(f"n2m sample: all {len(prompts)} prompts already have their files in {out} (use --overwrite)")
        return 0
    device = _device(args.device)
    config = {k: v for k, v in resolved(args).items() if k != "prompts"}  # each sidecar names its own prompt
    start = time.perf_counter()
    models = load_cascade(args.cascade, checkpoint_spec(args.checkpoints), device)
    results = generate(todo, args.cascade, models, seconds=args.seconds, num_samples=args.num_samples, seed=args.seed,
                       batch_size=args.batch_size, device=device, keep_stages=args.keep_stages, settings=settings,
                       text_encoder=args.text_encoder, precision=args.precision, progress=not args.quiet,
                       audio_prompt=audio_prompt, melody=melody, joint_model=args.joint_model)
    for result in results:
        write_result(out, result, config)
    elapsed = time.perf_counter() - start
    audio_s = sum(len(r.audio) / r.sample_rate for r in results)
    print(f"n2m sample: {len(results)} clips ({audio_s:.0f} s of 24 kHz audio) from {len(todo)} prompts in "
          f"{elapsed:.1f} s ({audio_s / elapsed:.2f} s of audio per second) -> {out}"
          + (f"; {skipped} prompts already done" if skipped else ""))
    return 0
