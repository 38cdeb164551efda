"""Sampling speed: seconds of audio generated per second, per stage and for the whole cascade, by sampler and steps.

Runs :func:`n2m.training.sampling.generate` (guidance, clipping, windowing and all) on randomly initialised networks of a
preset (speed does not depend on the weights) with a random text encoder of the paper's width. Prints, per cascade,
sampler and step count: per-stage throughput (s of audio / s), the sampler's speed as a ratio to the ancestral sampler
at the same steps (measured in the same run), and the time the paper's step counts would take, next to the paper's
figures for 4 samples on 4 TPU v4 chips (generator 25.0 s, cascader 60.0 s, super-resolution 57.3 s; spectrogram
generator 8.3 s).

    python benchmarks/sample.py --threads 1                       # CPU, tiny, 10 s clips, 4 and 8 steps
    python benchmarks/sample.py --device cuda --preset paper --seconds 30 --batch-size 4 --steps 20,100

All samplers make one network evaluation per step, so at equal steps their speed is the same within noise; what the
fast solver buys is fewer steps for the same quality, which needs trained models (FAD between sampler outputs). On a
shared CPU, ``--threads 1`` avoids OpenMP oversubscription (2 threads on 2 busy cores ran up to 10x slower here).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from n2m.training.cascade import CASCADES, StageModel  # noqa: E402
from n2m.training.config import DiffusionConfig  # noqa: E402
from n2m.training.export import build_model  # noqa: E402
from n2m.training.networks.presets import PAPER_TEXT_DIM, build_network, count_parameters  # noqa: E402
from n2m.training.sampling import Prompt, generate  # noqa: E402
from n2m.training.stages import get_stage  # noqa: E402
from n2m.training.text import TextEncoder  # noqa: E402

PAPER_SECONDS = {"generator": 25.0, "cascader": 60.0, "sr_cascader": 57.3, "spec_generator": 8.3}  # 4 samples, 4 TPUs


class RandomText(TextEncoder):
    """Token states of a fixed random sequence (the encoder's cost is negligible next to sampling)."""

    def __init__(self, dim: int, max_length: int):
        self.dim, self.max_length, self.device = dim, max_length, torch.device("cpu")

    def to(self, device):
        self.device = torch.device(device)
        return self

    def _states(self, texts):
        gen = torch.Generator().manual_seed(0)
        states = torch.randn(len(texts), self.max_length, self.dim, generator=gen).to(self.device)
        return states, torch.ones(len(texts), self.max_length, dtype=torch.bool, device=self.device)


def random_stage(name: str, preset: str, text_dim: int, device: torch.device) -> StageModel:
    spec = get_stage(name)
    cfg = spec.network(preset, text_dim)
    torch.manual_seed(0)
    net = build_network(cfg)
    torch.nn.init.normal_(net.head.weight, std=0.02)
    diffusion = DiffusionConfig(spec.schedule, spec.parametrisation, spec.weighting, aug_t_max=spec.aug_t_max,
                                token_length=spec.token_length)
    config = {"stage": name, "preset": preset, "spec": spec.to_dict(), "net": cfg.to_dict(), "text_encoder": None,
              "diffusion": diffusion.to_dict(), "lineage": {}}
    return StageModel(build_model(config, net.state_dict(), "random weights", device), "random", "-", "random")


def stage_times(cascade: str, models: dict, encoder: TextEncoder, args, device, sampler: str,
                steps: int) -> dict[str, float]:
    """Wall seconds per stage for one batch (from the timing ``generate`` records)."""
    prompts = [Prompt(f"p{i}", "a benchmark prompt") for i in range(args.batch_size)]
    results = generate(prompts, cascade, models, seconds=args.seconds, seed=0, batch_size=args.batch_size,
                       device=device, sampler=sampler, steps=steps, text_encoder=encoder, precision=args.precision,
                       progress=False)
    return results[0].metadata["timing"]["stage_seconds"]


def bench_cascade(cascade: str, args, device: torch.device, text_dim: int) -> None:
    stages = CASCADES[cascade]
    models = {s: random_stage(s, args.preset, text_dim, device) for s in stages}
    encoder = RandomText(text_dim, get_stage(stages[0]).token_length).to(device)
    audio_s = args.seconds * args.batch_size
    sizes = ", ".join(f"{s} {count_parameters(models[s].config['net']) / 1e6:.1f}M" for s in stages)
    print(f"\n== {cascade} cascade ({sizes})")
    stage_times(cascade, models, encoder, args, device, "ddim", 1)  # warm-up: kernels, allocator, lazy init
    header = "".join(f"{s:>16}" for s in stages)
    print(f"{'sampler':>10} {'steps':>5}{header}{'cascade':>10}{'vs ancestral':>14}   (s of audio per s)")
    per_step: dict[str, float] = {}
    for steps in (int(n) for n in args.steps.split(",")):
        baseline = None
        for sampler in args.samplers.split(","):
            times = stage_times(cascade, models, encoder, args, device, sampler, steps)
            total = sum(times.values())
            baseline = baseline or total
            cells = "".join(f"{audio_s / times[s]:16.3f}" for s in stages)
            print(f"{sampler:>10} {steps:>5}{cells}{audio_s / total:10.3f}{baseline / total:13.2f}x")
            if sampler == "ancestral" or not per_step:
                per_step = {s: times[s] / steps for s in stages}
    scale = 4 / args.batch_size * 30.0 / args.seconds
    caveat = "" if args.preset == "paper" else "; tiny networks, not comparable to the paper's"
    print(f"paper step counts, scaled to 4 x 30 s (linear in batch and length; the paper: 4 TPU v4 chips{caveat}):")
    for s in stages:
        ours = per_step[s] * get_stage(s).sampling.steps * scale
        paper = PAPER_SECONDS.get(s)
        ratio = f"{ours / paper:8.2f}x the paper's {paper:.1f} s" if paper else "    (no paper figure)"
        print(f"  {s:>15}: {get_stage(s).sampling.steps:5d} steps ~ {ours:9.1f} s  {ratio}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default="tiny", choices=["tiny", "paper"])
    parser.add_argument("--cascades", default="waveform,spectrogram")
    parser.add_argument("--samplers", default="ancestral,ddim,dpmpp")
    parser.add_argument("--steps", default="4,8", help="comma-separated step counts (every stage)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    text_dim = PAPER_TEXT_DIM if args.preset == "paper" else 32
    print(f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}), preset "
          f"{args.preset}, {args.batch_size} x {args.seconds:g} s, precision {args.precision}, torch "
          f"{torch.__version__}, {torch.get_num_threads()} CPU threads")
    for cascade in args.cascades.split(","):
        bench_cascade(cascade, args, device, text_dim)
    return 0


if __name__ == "__main__":
    sys.exit(main())
