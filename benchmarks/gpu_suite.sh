#!/usr/bin/env bash
# The GPU figures of the README's performance section in one command, each part under its own time limit so a short
# GPU lease still returns every finished part:
#   1. training, paper presets, bf16, eager: largest batch, step time, MFU, peak memory, one profiled step per stage;
#   2. bf16 vs fp32 parity (loss, gradients, 30 s samples);
#   3. sampling, paper presets, 4 x 30 s: paper step counts (extrapolated) and the fast sampler at 20 and 50 steps;
#   4. training again under torch.compile at the batches found in 1.
#
#   bash benchmarks/gpu_suite.sh OUTDIR [PRESET]        # PRESET: paper (default); tiny checks the script on any machine
# Writes OUTDIR/{log.txt, train_eager.json, train_compile.json, parity.json, profiles.txt, nvidia-smi.txt}.
# Time limits (seconds) can be changed through T_TRAIN, T_PARITY, T_SAMPLE, T_COMPILE; DEVICE picks the device,
# MAX_BATCH caps the automatic batch search (256), COMPILE picks torch.compile's scope in part 4: whole (default) or
# blocks (regional: each block type compiled once, minutes faster to compile on paper-size networks).
set -u
out=${1:?usage: gpu_suite.sh OUTDIR [PRESET]}
preset=${2:-paper}
device=${DEVICE:-cuda}
py=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out/prof"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
log="$out/log.txt"
part() { printf '\n== %s  [%s]\n' "$1" "$(date +%T)" | tee -a "$log"; }

{ nvidia-smi || echo "no nvidia-smi"; } > "$out/nvidia-smi.txt" 2>&1
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" 2>&1 | tee -a "$log"

part "1/4 training, $preset, bf16, eager"
timeout "${T_TRAIN:-200}" "$py" "$here/train.py" --device "$device" --preset "$preset" --precision bf16 \
  --max-batch "${MAX_BATCH:-256}" --json "$out/train_eager.json" --profile "$out/prof" 2>&1 | tee -a "$log"

part "2/4 bf16 vs fp32 parity"
timeout "${T_PARITY:-100}" "$py" "$here/parity.py" --device "$device" --preset "$preset" --seconds 30 \
  --json "$out/parity.json" 2>&1 | tee -a "$log"

part "3/4 sampling, $preset, 4 x 30 s"
timeout "${T_SAMPLE:-150}" "$py" "$here/sample.py" --device "$device" --preset "$preset" --seconds 30 --batch-size 4 \
  --steps 20,50 --samplers ancestral,dpmpp 2>&1 | tee -a "$log"

part "4/4 training, $preset, bf16, torch.compile (${COMPILE:-whole})"
batches=$("$py" -c "import json, sys; rows = json.load(open(sys.argv[1]))['rows']; \
print(','.join(f\"{r['stage']}={r['batch']}\" for r in rows))" "$out/train_eager.json" 2>/dev/null || echo auto)
timeout "${T_COMPILE:-240}" "$py" "$here/train.py" --device "$device" --preset "$preset" --precision bf16 \
  --compile "${COMPILE:-whole}" --batch "$batches" --stages cascader,generator,sr_cascader,vocoder,spec_generator \
  --json "$out/train_compile.json" 2>&1 | tee -a "$log"

for f in "$out"/prof/*.txt; do [ -e "$f" ] && { echo "### $(basename "$f")"; cat "$f"; echo; }; done > "$out/profiles.txt"
rm -rf "$out/prof"
part "done"
