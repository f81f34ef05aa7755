#!/usr/bin/env python3
"""How faithful are fervid's heat maps? The deletion test on a FER-2013 split.

For each method and layer, every face's map for its predicted class is computed, the 10%
and 20% of pixels it rates highest are blanked, and the mean fall in that class's
probability is reported beside a random map of the same area (higher = the map points at
what the model uses). It also counts empty maps (all zero: nothing at that layer raised the
score). docs/visualize.md quotes its output for the shipped model.

    python scripts/cam_deletion.py --data ../shared/datasets/fer2013 --split PublicTest --n 500
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="FER-2013 source (fer2013.csv or the Kaggle folder layout)")
    ap.add_argument("--split", default="PublicTest", help="split to sample faces from (default: PublicTest)")
    ap.add_argument("--model", help="fervid .safetensors model (default: the shipped one)")
    ap.add_argument("--n", type=int, default=500, help="faces sampled (default: 500)")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed (default: 0)")
    ap.add_argument("--layers", help="comma list of layers (default: the default map layers, last two stages)")
    args = ap.parse_args()

    import torch

    from fervid.analysis import interpret as insight
    from fervid.data import load_faces
    from fervid.analysis.evaluate import scored_class_set

    torch.set_num_threads(1)
    model, meta, path = insight.load_insight_model(args.model)
    data = load_faces(args.data, args.split, scored_class_set(meta))
    idx = np.sort(np.random.default_rng(args.seed).choice(len(data), min(args.n, len(data)), replace=False))
    faces = data.images[idx]
    infos = insight.probe_layers(model)
    layers = args.layers.split(",") if args.layers else insight.default_map_layers(infos)[-2:][::-1]
    pred = insight.grad_cam(model, faces, layer=layers[0]).targets
    rand = np.random.default_rng(args.seed + 1).uniform(size=faces.shape)
    print(f"{path.name} ({meta['arch']}), {len(faces)} faces of {data.name}, seed {args.seed}")
    print("| method | layer | empty maps | prob. drop, top 10% blanked | top 20% blanked |")
    print("| --- | --- | --- | --- | --- |")
    print(f"| random | - | - | {insight.deletion_drop(model, faces, rand, pred, 0.1):.3f} "
          f"| {insight.deletion_drop(model, faces, rand, pred, 0.2):.3f} |")
    for method in insight.CAM_METHODS:
        for layer in layers:
            r = insight.grad_cam(model, faces, layer=layer, method=method)
            empty = float((r.cams.reshape(len(faces), -1).max(1) == 0).mean())
            print(f"| {method} | {layer} | {empty:.1%} | {insight.deletion_drop(model, faces, r.cams, pred, 0.1):.3f} "
                  f"| {insight.deletion_drop(model, faces, r.cams, pred, 0.2):.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
