#!/usr/bin/env bash
# Package a finished training run as fervid's shipped default model and regenerate the
# model card's figures, all with fervid's own commands (nothing here is hand-edited). The run's
# config, metrics and curves go to its experiment folder (EXPERIMENT, default experiments/RUN_NAME).
#   usage: scripts/ship-model.sh [--int8] RUN_DIR [FER2013_SOURCE]
# --int8 ships the ONNX graph quantised to int8 (calibrated on Training faces) instead of with
# fp16 weights: for an architecture too slow in fp32 for recognition's 1,000 faces/s at
# batch 32 on 2 cores (bench/sections/classifier.py says which). The safetensors stay fp16 either way.
set -euo pipefail
int8=0
if [ "${1:-}" = --int8 ]; then int8=1; shift; fi
run=${1:?usage: scripts/ship-model.sh [--int8] RUN_DIR [FER2013_SOURCE]}
data=${2:-../shared/datasets/fer2013}
cd "$(dirname "$0")/.."
card=docs/model
exp=${EXPERIMENT:-experiments/$(basename "$run")}

# Weights as fp16 (half the size; the loader casts back to fp32). The ONNX graph is
# exported from these same rounded weights (stored as fp16 too, computed in fp32), so both
# files give the same answers.
python - "$run" <<'PY'
import sys
from safetensors.torch import load_file, save_file
from safetensors import safe_open
from fervid.modelfile import resolve
src = resolve(sys.argv[1], torch_only=True)
with safe_open(str(src), "pt") as f:
    meta = f.metadata()
state = {k: (v.half() if v.is_floating_point() else v) for k, v in load_file(str(src)).items()}
save_file(state, "fervid/assets/model.safetensors", metadata=meta)
PY
if [ "$int8" = 1 ]; then
  fervid export fervid/assets/model.safetensors -o fervid/assets/model.onnx --int8 --calib "$data" --overwrite
else
  fervid export fervid/assets/model.safetensors -o fervid/assets/model.onnx --fp16-weights --overwrite
fi

mkdir -p "$card" "$exp"
cp "$run/config.json" "$exp/config.json"
cp "$run/metrics.jsonl" "$exp/metrics.jsonl"
fervid plot "$run" -o "$exp/curves.png" --overwrite
for set in all no-disgust no-disgust-fear; do
  extra=(); [ "$set" = all ] || extra=(--classes "$set")
  fervid evaluate --model fervid/assets/model.safetensors --data "$data" --split PublicTest \
    --tta --precision fp32 "${extra[@]}" --out-dir "$card/eval-PublicTest-$set" --overwrite \
    | tee "$card/eval-PublicTest-$set.txt"
done
# What recognition runs is the ONNX file: score it too (the same numbers as above for fp16
# weights; for int8, the cost of quantisation on PublicTest).
fervid evaluate --model fervid/assets/model.onnx --data "$data" --split PublicTest \
  --out-dir "$card/eval-PublicTest-onnx" --overwrite | tee "$card/eval-PublicTest-onnx.txt"
