"""Training throughput of each stage: steps/s, samples/s, counted FLOPs, achieved TFLOP/s, MFU and peak memory.

One training step is what ``n2m train`` runs per batch: conditioning augmentation (the module's own registry), the
denoiser loss with CFG dropout (random text states stand in for the frozen encoder, which is not counted), backward,
gradient clipping, Adam (fused on CUDA, as the training module uses it) and the EMA update, at the stage's training
length (the generators' 30 s; the cascaders' and the vocoder's longest 4 s window rounded to the network stride). FLOPs of forward + backward are counted with ``torch.utils.flop_counter.FlopCounterMode`` on the
real step; MFU divides the achieved rate by the device's datasheet peak for the precision (GPU) and, as a baseline
measured in the same run, by a large matrix product's rate on the same device ("vs GEMM").

    python benchmarks/train.py                                   # CPU, tiny presets (make bench)
    python benchmarks/train.py --device cuda --preset paper --precision bf16          # largest batch that fits
    python benchmarks/train.py --device cuda --preset paper --precision bf16 --batch 16 --stages cascader
    python benchmarks/train.py --device cuda --preset paper --precision bf16 --profile prof/   # + top kernels per stage

The automatic batch (CUDA) is the largest power of two whose steps fit: the peak memory of batches 1 and 2 is
extrapolated linearly to the device's memory, then checked by running it (halved on an out-of-memory error).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import json
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from n2m.training.config import DiffusionConfig  # noqa: E402
from n2m.training.diffusion.denoiser import Conditioning  # noqa: E402
from n2m.training.module import conditioning_field  # noqa: E402
from n2m.training.networks.presets import PAPER_TEXT_DIM, PRESETS, build_network  # noqa: E402
from n2m.training.stages import STAGES, StageSpec  # noqa: E402
from n2m.training.stages_spectrogram import MEL  # noqa: E402

ALL_STAGES = ("generator", "cascader", "sr_cascader", "spec_generator", "vocoder")

# Dense (no sparsity) datasheet peaks in TFLOP/s: (device name fragment, precision) -> peak. First match wins.
PEAKS: list[tuple[str, str, float]] = [
    ("H100 PCIe", "bf16", 756.0), ("H100 PCIe", "fp32", 51.2),
    ("H100", "bf16", 989.4), ("H100", "fp32", 66.9),
    ("H200", "bf16", 989.4), ("H200", "fp32", 66.9),
    ("A100", "bf16", 312.0), ("A100", "fp32", 19.5),
    ("L4", "bf16", 121.0), ("L4", "fp32", 30.3),
]


def datasheet_peak(device: torch.device, precision: str) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for frag, prec, peak in PEAKS if frag in name and prec == precision), None)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def gemm_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """Measured rate of a large square matrix product (the same-run baseline)."""
    n = 8192 if device.type == "cuda" else 1024
    a, b = (torch.randn(n, n, device=device, dtype=dtype) for _ in range(2))
    for _ in range(3):
        a @ b
    _sync(device)
    reps = 20 if device.type == "cuda" else 5
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def training_length(spec: StageSpec, stride: int) -> int:
    """The generator's full window; a variable window's longest length rounded down to the stride."""
    lo, hi = (round(w * spec.sample_rate) for w in spec.window_s)
    return hi if lo == hi else hi // stride * stride


class Step:
    """One training step of a stage on synthetic data (see the module docstring)."""

    def __init__(self, spec: StageSpec, preset: str, device: torch.device, bf16: bool, batch: int, compile_: str):
        cfg = spec.network(preset, PAPER_TEXT_DIM if spec.text else None)
        self.net = build_network(cfg, device)
        self.params = sum(p.numel() for p in self.net.parameters())
        self.ema = copy.deepcopy(self.net).requires_grad_(False)
        if compile_ == "whole":
            self.net.compile()
        elif compile_ == "blocks":
            self.net.compile_blocks()
        self.denoiser = DiffusionConfig(spec.schedule, spec.parametrisation, spec.weighting).denoiser(self.net)
        schedule = self.denoiser.schedule
        self.cond_field = conditioning_field(cfg)
        self.augment = (spec.augmentation(schedule, spec.aug_t_max, spec.aug_blur_sigma)
                        if self.cond_field else None)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-4, betas=(0.9, 0.999),
                                    fused=device.type == "cuda")
        self.spec, self.device, self.bf16, self.batch = spec, device, bf16, batch
        self.length = training_length(spec, cfg.total_stride)
        g = torch.Generator(device).manual_seed(0)
        self.x0 = torch.randn(batch, cfg.in_channels, self.length, device=device, generator=g) * 0.3
        self.text = self.mask = self.signal = None
        if cfg.text_dim:
            self.text = torch.randn(batch, spec.token_length, cfg.text_dim, device=device, generator=g)
            lengths = torch.randint(4, spec.token_length + 1, (batch,), device=device, generator=g)
            self.mask = torch.arange(spec.token_length, device=device)[None, :] < lengths[:, None]
        if self.cond_field == "lowfi":  # [B, 1, T] upsampled low-fi waveform
            self.signal = torch.randn(batch, cfg.lowfi_channels, self.length, device=device, generator=g) * 0.3
        elif self.cond_field == "aligned":  # [B, 80, T / hop] log-mel frames of the window
            frames = self.length // MEL.hop
            self.signal = torch.rand(batch, cfg.aligned_channels, frames, device=device, generator=g) * 2 - 1

    def forward_backward(self, n: int | None = None) -> None:
        """Loss and backward on the first ``n`` examples (all by default)."""
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if self.bf16
                    else contextlib.nullcontext())
        rows = slice(0, n or self.batch)
        with autocast:
            fields = {"text": _rows(self.text, rows), "text_mask": _rows(self.mask, rows)}
            if self.augment is not None:
                fields[self.cond_field], fields["aug_t"] = self.augment(self.signal[rows])
            loss = self.denoiser.loss(self.x0[rows], Conditioning(**fields), cfg_p=self.spec.cfg_dropout).mean()
        loss.backward()

    def __call__(self) -> None:
        self.forward_backward()
        torch.nn.utils.clip_grad_norm_(self.net.parameters(), 1.0)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            torch._foreach_lerp_(list(self.ema.parameters()), list(self.net.parameters()), 1e-4)

    def count_flops(self) -> int:
        """FLOPs of one step's forward + backward, counted on one example and scaled by the batch (every counted op,
        convolution, matmul and attention, is linear in the batch; counting the whole batch needs extra memory)."""
        from torch.utils.flop_counter import FlopCounterMode

        with FlopCounterMode(display=False) as counter:
            self.forward_backward(1)
        self.opt.zero_grad(set_to_none=True)
        return counter.get_total_flops() * self.batch


def _rows(x: torch.Tensor | None, rows: slice) -> torch.Tensor | None:
    return None if x is None else x[rows]


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def peak_memory(spec, preset, device, bf16, batch, compile_) -> float | None:
    """Peak device memory in bytes of two steps at ``batch``, or None when they run out of memory."""
    step = None
    try:
        torch.cuda.reset_peak_memory_stats(device)
        step = Step(spec, preset, device, bf16, batch, compile_)
        step()
        step()
        _sync(device)
        return float(torch.cuda.max_memory_allocated(device))
    except torch.OutOfMemoryError:
        return None
    finally:
        del step
        _free()


def largest_batch(spec, preset, device, bf16, compile_, limit: int) -> int:
    """The largest power of two up to ``limit`` whose steps fit: batches 1 and 2 give memory = fixed + per-sample x
    batch; the prediction for 92% of the device's memory is rounded down to a power of two, run, and halved on OOM."""
    one, two = (peak_memory(spec, preset, device, bf16, b, compile_) for b in (1, 2))
    if one is None:
        raise SystemExit(f"{spec.name}: not even batch 1 fits on {device}")
    if two is None:
        return 1
    per_sample = max(two - one, 1.0)
    total = torch.cuda.get_device_properties(device).total_memory
    guess = max(2, min(limit, int((0.92 * total - (one - per_sample)) / per_sample)))
    batch = 2 ** int(math.log2(guess))
    while batch > 2 and peak_memory(spec, preset, device, bf16, batch, compile_) is None:
        batch //= 2
    return batch


def profile_step(step: Step, path: Path, rows: int = 25) -> None:
    """Profile one training step (after warm-up) and write the top kernels by device time to ``path``."""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if step.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        step()
        _sync(step.device)
    key = "self_cuda_time_total" if step.device.type == "cuda" else "self_cpu_time_total"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=90))


def measure(spec, preset, device, bf16, batch, steps, warmup, compile_, peak, gemm,
            profile_dir: Path | None = None) -> dict:
    step = Step(spec, preset, device, bf16, batch, compile_)
    start = time.perf_counter()
    for _ in range(warmup):
        step()
    _sync(device)
    warmup_s = time.perf_counter() - start
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    seconds = (time.perf_counter() - start) / steps
    memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")
    flops = step.count_flops()
    if profile_dir is not None:
        profile_step(step, profile_dir / f"{spec.name}-{preset}-{'bf16' if bf16 else 'fp32'}"
                                          f"{'-' + compile_ if compile_ else ''}.txt")
    achieved = flops / seconds / 1e12
    row = {
        "stage": spec.name, "preset": preset, "precision": "bf16" if bf16 else "fp32", "compile": compile_ or "eager",
        "batch": batch, "length": step.length, "seconds_of_audio": step.length / spec.sample_rate,
        "params": step.params, "step_s": seconds, "steps_per_s": 1 / seconds, "samples_per_s": batch / seconds,
        "gflop_per_step": flops / 1e9, "tflops": achieved, "mfu": achieved / peak if peak else None,
        "vs_gemm": achieved / gemm, "peak_mem_gib": memory, "warmup_s": warmup_s,
    }
    del step
    _free()
    return row


def parse_batches(text: str) -> dict[str, int | str]:
    """``"auto"`` | ``"16"`` | ``"generator=64,cascader=32"`` -> ``{stage or "*": batch or "auto"}``."""
    out: dict[str, int | str] = {}
    for item in text.split(","):
        stage, _, value = item.rpartition("=")
        out[stage or "*"] = value if value == "auto" else int(value)
    return out


def print_table(rows: list[dict], device_name: str, peak: float | None, gemm: float) -> None:
    print(f"\ndevice: {device_name}; measured GEMM {gemm:.1f} TFLOP/s"
          + (f"; datasheet peak {peak:.1f} TFLOP/s" if peak else "; no datasheet peak (MFU vs GEMM only)"))
    head = (f"{'stage':<15}{'preset':<7}{'prec':<5}{'batch':>6}{'length':>8}{'params':>9}{'step ms':>9}"
            f"{'steps/s':>9}{'samples/s':>10}{'GFLOP/step':>12}{'TFLOP/s':>9}{'MFU':>7}{'vs GEMM':>8}{'mem GiB':>8}")
    print(head)
    print("-" * len(head))
    for r in rows:
        mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "-"
        print(f"{r['stage']:<15}{r['preset']:<7}{r['precision']:<5}{r['batch']:>6}{r['length']:>8}"
              f"{r['params'] / 1e6:>8.1f}M{1000 * r['step_s']:>9.1f}{r['steps_per_s']:>9.2f}{r['samples_per_s']:>10.2f}"
              f"{r['gflop_per_step']:>12.1f}{r['tflops']:>9.3f}{mfu:>7}{100 * r['vs_gemm']:>7.1f}%"
              f"{r['peak_mem_gib']:>8.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"], help="bf16 = autocast (bf16-mixed)")
    parser.add_argument("--stages", default=",".join(ALL_STAGES), help="comma-separated stages")
    parser.add_argument("--batch", default="auto", help="per-step batch: N, auto (the largest power of two that "
                                                         "fits on cuda, 4 on cpu) or per stage, e.g. generator=64,cascader=32")
    parser.add_argument("--max-batch", type=int, default=256, help="upper limit of the auto search")
    parser.add_argument("--steps", type=int, help="timed steps (default 10 on cuda, 3 on cpu)")
    parser.add_argument("--warmup", type=int, help="untimed steps first (default 3 on cuda, 1 on cpu)")
    parser.add_argument("--compile", nargs="?", const="whole", default="", choices=["", "whole", "blocks"],
                        help="torch.compile the whole network (default) or each block (regional: compiles faster)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument("--profile", metavar="DIR", type=Path, help="profile one step per stage: top kernels to DIR")
    args = parser.parse_args(argv)

    device = torch.device(args.device)
    bf16 = args.precision == "bf16"
    on_gpu = device.type == "cuda"
    steps = args.steps or (10 if on_gpu else 3)
    warmup = args.warmup if args.warmup is not None else (3 if on_gpu else 1)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    gemm = gemm_tflops(device, torch.bfloat16 if bf16 and device.type == "cuda" else torch.float32)
    peak = datasheet_peak(device, args.precision)
    batches = parse_batches(args.batch)
    rows = []
    for name in args.stages.split(","):
        spec = STAGES[name]
        batch = batches.get(name, batches.get("*", "auto"))
        if batch == "auto":
            batch = largest_batch(spec, args.preset, device, bf16, args.compile, args.max_batch) \
                if device.type == "cuda" else 4
        try:
            rows.append(measure(spec, args.preset, device, bf16, batch, steps, warmup, args.compile, peak, gemm,
                                args.profile))
        except torch.OutOfMemoryError as err:  # report it and go on with the other stages
            print(f"{name}: out of memory at batch {batch}: {str(err).splitlines()[0]}", flush=True)
            _free()
            continue
        if args.json:  # rows so far, so a run stopped at its time limit still leaves its figures
            Path(args.json).write_text(json.dumps({"device": device_name, "gemm_tflops": gemm, "peak_tflops": peak,
                                                   "rows": rows}, indent=2))
        print(f"{name}: batch {batch}, {rows[-1]['steps_per_s']:.2f} steps/s, {rows[-1]['tflops']:.2f} TFLOP/s",
              flush=True)
    print_table(rows, device_name, peak, gemm)
    return 0


if __name__ == "__main__":
    sys.exit(main())
