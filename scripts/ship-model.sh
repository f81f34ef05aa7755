#!/usr/bin/env bash
# Package a finished training run as fervid's shipped default model and regenerate the
# model card's figures, all with fervid's own commands (nothing here is hand-edited).
#   usage: scripts/ship-model.sh RUN_DIR [FER2013_SOURCE]
set -euo pipefail
run=${1:?usage: scripts/ship-model.sh RUN_DIR [FER2013_SOURCE]}
data=${2:-../shared/datasets/fer2013}
cd "$(dirname "$0")/.."
card=docs/model

# Weights as fp16 (half the size; the loader casts back to fp32). The ONNX graph is
# exported from these same rounded weights (stored as fp16 too, computed in fp32), so both
# files give the same answers.
python - "$run" <<'PY'
import sys
from safetensors.torch import load_file, save_file
from safetensors import safe_open
from fervid.checkpoint import resolve_model_path
src = resolve_model_path(sys.argv[1])
with safe_open(str(src), "pt") as f:
    meta = f.metadata()
state = {k: (v.half() if v.is_floating_point() else v) for k, v in load_file(str(src)).items()}
save_file(state, "fervid/assets/model.safetensors", metadata=meta)
PY
fervid export fervid/assets/model.safetensors -o fervid/assets/model.onnx --fp16-weights --overwrite

mkdir -p "$card"
cp "$run/config.json" "$card/config.json"
cp "$run/metrics.jsonl" "$card/metrics.jsonl"
fervid plot "$run" -o "$card/curves.png" --overwrite
fervid models > "$card/models.txt"
for set in all no-disgust no-disgust-fear; do
  extra=(); [ "$set" = all ] || extra=(--classes "$set")
  fervid evaluate --model fervid/assets/model.safetensors --data "$data" --split PublicTest \
    --tta --precision fp32 "${extra[@]}" --out-dir "$card/eval-PublicTest-$set" --overwrite \
    | tee "$card/eval-PublicTest-$set.txt"
done
