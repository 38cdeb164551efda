"""bf16 (autocast) against fp32 on the same weights: one training step's loss and gradients, and one sample.

Training: for each stage, the same batch, diffusion levels ``t`` and noise go through the loss in fp32 (TF32 off) and
under bf16 autocast; printed are the relative loss difference and the cosine between the two gradient vectors, summed
in float64 (a float32 sum over the paper networks' ~10^9 entries is off by more than the tolerance: it printed cosines
above 1). Beside it, a control that uses no bf16 arithmetic: the fp32 gradient again with every weight rounded to bf16,
its cosine with the first. A deep random network whose gradient already moves more than the tolerance under that
rounding alone is too ill-conditioned for the gradient test to say anything of the bf16 path: that row reads "n/a"
and does not fail (the loss and the samples are still judged).
Sampling: the whole cascade samples the same prompts from the same seeds with deterministic DDIM (eta 0) in both
precisions; printed is each stage's signal-to-difference ratio ``10 log10(|x_fp32|^2 / |x_fp32 - x_bf16|^2)`` in dB.
Random networks stand in for trained ones (their output heads are initialised with std 0.02 so they do not output
zeros); the figures say how far the bf16 path drifts, not how good the samples are.

Tolerances (stated before measuring): loss within 1% relative, gradient cosine >= 0.99 (where the control is >= 0.99),
each stage's sample at least 20 dB above its difference. The exit status is 1 when one is missed.

    python benchmarks/parity.py                                               # CPU, tiny (bf16 autocast on CPU)
    python benchmarks/parity.py --device cuda --preset paper --seconds 30 --json parity.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sample import RandomText, random_stage  # noqa: E402
from benchmarks.train import ALL_STAGES, Step  # noqa: E402
from n2m.training.cascade import CASCADES  # noqa: E402
from n2m.training.diffusion.denoiser import Conditioning  # noqa: E402
from n2m.training.networks.presets import PAPER_TEXT_DIM, PRESETS  # noqa: E402
from n2m.training.sampling import Prompt, generate  # noqa: E402
from n2m.training.stages import STAGES, get_stage  # noqa: E402

LOSS_RTOL, GRAD_COSINE, SAMPLE_DB = 0.01, 0.99, 20.0


def _loss_and_grad(step: Step, bf16: bool, t: torch.Tensor, noise: torch.Tensor) -> tuple[float, torch.Tensor]:
    """The mean loss at fixed ``t`` ``[B]`` and ``noise`` (no CFG dropout, no augmentation noise) and the flat grad."""
    step.net.zero_grad(set_to_none=True)
    with torch.autocast(step.device.type, dtype=torch.bfloat16, enabled=bf16):
        fields = {"text": step.text, "text_mask": step.mask}
        if step.cond_field:
            fields[step.cond_field] = step.signal
            fields["aug_t"] = torch.zeros(step.batch, device=step.device)
        loss = step.denoiser.loss(step.x0, Conditioning(**fields), t=t, noise=noise).mean()
    loss.backward()
    grad = torch.cat([p.grad.flatten().double() for p in step.net.parameters() if p.grad is not None])
    return float(loss.detach()), grad


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    """Cosine of two flat float64 vectors."""
    return float(a @ b / (a.norm() * b.norm()).clamp_min(1e-300))


def gradient_verdict(cosine: float, control: float) -> str:
    """"ok" or "MISS" of the bf16 gradient's cosine against the tolerance, or "n/a" where the control (the fp32
    gradient on bf16-rounded weights) already misses it: no bf16 path could meet a tolerance the weights' rounding alone
    breaks."""
    if control < GRAD_COSINE:
        return "n/a"
    return "ok" if cosine >= GRAD_COSINE else "MISS"


def _rounded_weights_grad(step: Step, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The fp32 gradient with every parameter rounded to bf16 (then restored): the control of the gradient test."""
    saved = [p.detach().clone() for p in step.net.parameters()]
    with torch.no_grad():
        for p in step.net.parameters():
            p.copy_(p.to(torch.bfloat16))
    _, grad = _loss_and_grad(step, False, t, noise)
    with torch.no_grad():
        for p, value in zip(step.net.parameters(), saved):
            p.copy_(value)
    return grad


def perturb_zero_weights(net: torch.nn.Module) -> None:
    """Draw the all-zero weight tensors (the zero-initialised output convs and projections) from N(0, 0.02^2), in
    place: left at zero they would make every early gradient trivially equal in both precisions."""
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1 and float(p.abs().max()) == 0.0:
                p.normal_(0, 0.02)


def training_parity(stage: str, preset: str, device: torch.device, batch: int, diagnose: bool = False) -> dict:
    spec = STAGES[stage]
    step = Step(spec, preset, device, bf16=False, batch=batch, compile_="")
    perturb_zero_weights(step.net)
    g = torch.Generator(device).manual_seed(1)
    t = torch.rand(batch, device=device, generator=g) * 0.9 + 0.05
    noise = torch.randn(step.x0.shape, device=device, generator=g)
    loss32, grad32 = _loss_and_grad(step, False, t, noise)
    loss16, grad16 = _loss_and_grad(step, True, t, noise)
    cosine = _cosine(grad32, grad16)
    control = _cosine(grad32, _rounded_weights_grad(step, t, noise))
    rel = abs(loss16 - loss32) / abs(loss32)
    verdict = gradient_verdict(cosine, control)
    row = {"stage": stage, "loss_fp32": loss32, "loss_bf16": loss16, "loss_rel_diff": rel, "grad_cosine": cosine,
           "grad_cosine_control": control, "grad_test": verdict, "ok": rel <= LOSS_RTOL and verdict != "MISS"}
    if diagnose:
        row["worst_params"] = _worst_params(step, grad32, grad16)
        row["cosine_by_sdpa_backend"] = _by_backend(step, grad32, t, noise)
    del step
    return row


def _worst_params(step: Step, grad32: torch.Tensor, grad16: torch.Tensor, top: int = 6) -> list[tuple[str, float, float]]:
    """``(name, |g16 - g32| / |g32|, share of |g32|^2)`` of the parameters whose bf16 gradient is furthest off."""
    rows, start, total = [], 0, float(grad32.norm()) ** 2
    for name, p in step.net.named_parameters():
        if p.grad is None:
            continue
        a, b = grad32[start:start + p.numel()], grad16[start:start + p.numel()]
        start += p.numel()
        rows.append((name, float((a - b).norm() / a.norm().clamp_min(1e-30)), float(a.norm()) ** 2 / total))
    return sorted(rows, key=lambda r: -r[1] * r[2])[:top]


def _by_backend(step: Step, grad32: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> dict[str, float | str]:
    """Gradient cosine of bf16 against fp32 with each scaled-dot-product-attention kernel forced."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    out: dict[str, float | str] = {}
    for backend in (SDPBackend.MATH, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.FLASH_ATTENTION,
                    SDPBackend.CUDNN_ATTENTION):
        try:
            with sdpa_kernel(backend):
                _, grad = _loss_and_grad(step, True, t, noise)
            out[backend.name] = _cosine(grad32, grad)
        except RuntimeError as err:
            out[backend.name] = f"unavailable: {str(err).splitlines()[0][:80]}"
    return out


def _snr_db(reference: np.ndarray, other: np.ndarray) -> float:
    diff = float(np.sum((reference.astype(np.float64) - other) ** 2))
    return math.inf if diff == 0 else 10 * math.log10(float(np.sum(reference.astype(np.float64) ** 2)) / diff)


def sampling_parity(cascade: str, preset: str, device: torch.device, seconds: float, steps: int) -> list[dict]:
    stages = CASCADES[cascade]
    text_dim = PAPER_TEXT_DIM if preset == "paper" else 32
    models = {s: random_stage(s, preset, text_dim, device) for s in stages}
    encoder = RandomText(text_dim, get_stage(stages[0]).token_length).to(device)
    prompts = [Prompt("a", "first prompt"), Prompt("b", "second prompt")]
    outputs = {}
    for precision in ("fp32", "bf16"):
        results = generate(prompts, cascade, models, seconds=seconds, seed=0, batch_size=2, device=device,
                           sampler="ddim", steps=steps, eta=0.0, text_encoder=encoder, precision=precision,
                           keep_stages=True, progress=False)
        outputs[precision] = results
    rows = []
    for i, stage in enumerate(stages):
        last = i == len(stages) - 1
        snrs = [_snr_db(a.audio, b.audio) if last else _snr_db(a.stages[stage][0], b.stages[stage][0])
                for a, b in zip(outputs["fp32"], outputs["bf16"])]
        rows.append({"cascade": cascade, "stage": stage, "snr_db_min": min(snrs), "ok": min(snrs) >= SAMPLE_DB})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--stages", default=",".join(ALL_STAGES))
    parser.add_argument("--cascades", default="waveform,spectrogram")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of the parity samples")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps per stage of the parity samples")
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--diagnose", action="store_true", help="per stage: the parameters whose bf16 gradient is "
                                                                 "furthest off, and the cosine per attention kernel")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here
    torch.backends.cudnn.allow_tf32 = False
    report: dict = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                    "preset": args.preset, "tolerances": {"loss_rel": LOSS_RTOL, "grad_cosine": GRAD_COSINE,
                                                          "sample_db": SAMPLE_DB}, "training": [], "sampling": []}
    print(f"bf16 vs fp32 on {report['device']}, preset {args.preset}")
    for stage in args.stages.split(","):
        row = training_parity(stage, args.preset, device, args.batch, args.diagnose)
        report["training"].append(row)
        print(f"train  {stage:<15} loss fp32 {row['loss_fp32']:.6f} bf16 {row['loss_bf16']:.6f} "
              f"rel {row['loss_rel_diff']:.2e}  grad cosine {row['grad_cosine']:.5f} ({row['grad_test']}; control "
              f"{row['grad_cosine_control']:.5f})  {'ok' if row['ok'] else 'MISS'}",
              flush=True)
        for key in ("worst_params", "cosine_by_sdpa_backend"):
            if key in row:
                print(f"       {key}: {row[key]}", flush=True)
    for cascade in filter(None, args.cascades.split(",")):
        for row in sampling_parity(cascade, args.preset, device, args.seconds, args.steps):
            report["sampling"].append(row)
            print(f"sample {cascade:<11} {row['stage']:<15} SNR {row['snr_db_min']:.1f} dB  "
                  f"{'ok' if row['ok'] else 'MISS'}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0 if all(r["ok"] for r in report["training"] + report["sampling"]) else 1


if __name__ == "__main__":
    sys.exit(main())
