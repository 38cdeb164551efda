"""``n2m sample``'s command line: the options, parsed into :class:`n2m.training.sample_job.SampleSettings` for the job
:func:`n2m.training.sample_job.run_sample` (text prompts -> 24 kHz wav files through a Noise2Music cascade, with a JSON
sidecar per file; its module docstring says what is written).
"""

from __future__ import annotations

import argparse

from n2m.config import FRACTION, NONNEGATIVE, POSITIVE, POSITIVE_INT, job, leaf, number
from n2m.training.cascade import CASCADES
from n2m.training.conditioning import DEFAULT_PROMPT_SECONDS, DOUBLE_AUDIO_GUIDANCE
from n2m.training.diffusion.guidance import CLIPS
from n2m.training.diffusion.samplers import SAMPLERS, SPACINGS
from n2m.training.joint_bank import BRIDGES, DEFAULT_NEIGHBOURS
from n2m.training.sampling import MAX_SECONDS, PRECISIONS, SECONDS
from n2m.training.stages import STAGES


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
    extra.add_argument("--text-bridge", choices=list(BRIDGES),
                       help="how a text prompt conditions a stage trained on audio embeddings: "
                            + "; ".join(f"{k}: {v}" for k, v in BRIDGES.items())
                            + " (default: nearest when the stage holds its training clips' embeddings, else direct)")
    extra.add_argument("--bridge-neighbours", type=POSITIVE_INT, default=DEFAULT_NEIGHBOURS, metavar="K",
                       help="training clips averaged by --text-bridge nearest")
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
    how.add_argument("--t-stop", metavar="T|STAGE=T,...",
                     help="stop at noise level T in [0, 1) and return the denoiser's estimate there (the last step "
                          "jumps to 0); 0 = sample down to 0 (default)")
    how.add_argument("--gamma", type=NONNEGATIVE,
                     help=f"ancestral stochasticity for every stage (paper: {_paper('gamma')})")
    how.add_argument("--eta", type=NONNEGATIVE, default=0.0, help="DDIM stochasticity")
    how.add_argument("--clip", default="dynamic", choices=list(CLIPS),
                     help="x0 clipping: dynamic (Imagen's dynamic thresholding), static ([-1, 1]) or none")
    how.add_argument("--clip-percentile", type=number(float, low=0, high=1, low_open=True), default=0.995, help="dynamic clipping percentile")
    how.add_argument("--aug-t", type=FRACTION, default=0.0, help="noise level of the cascaders' and vocoder's conditioning")
    how.add_argument("--keep-input-band", action="store_true",
                     help="cascaders keep their input's band: below 0.85 x the input's Nyquist frequency the output is "
                          "the input's (crossfaded to the cascader's own by 0.95 x), so a cascader only adds the band "
                          "its input lacks (AudioSR's post-processing)")
    how.add_argument("--window-seconds", metavar="S|STAGE=S,...",
                     help="cascaders/vocoder: process in cross-faded windows of S seconds (0 = whole; default: whole, "
                          "windows if out of memory)")

    run = parser.add_argument_group("hardware")
    run.add_argument("--batch-size", type=POSITIVE_INT, default=4, help="clips sampled together")
    run.add_argument("--device", default="auto", help="cpu, cuda, cuda:1, ... (auto: cuda when available)")
    run.add_argument("--precision", default="auto", choices=list(PRECISIONS),
                     help="; ".join(f"{name}: {what}" for name, what in PRECISIONS.items()))
    run.add_argument("--quiet", action="store_true", help="no progress bars")
    leaf(parser, job("n2m.training.sample_job:run_sample"))
