"""Which static int8 quantisation keeps a model's answers: agreement with fp32 and accuracy, side by side.

``fervid export --int8`` quantises with MinMax calibration on 512 Training faces, every
layer included. That costs ``vgg_m`` 0.14 point of PublicTest, but a FastNet 0.2-0.5 point
(97% top-1 agreement), so this tries the usual remedies on one model in one run: other
calibration methods, the first and last layers left in float, signed activations.

    python -m bench.int8_calibration --model runs/speedrun/muon/seed0 --data ../shared/datasets/fer2013

Prints one row a variant: top-1 agreement with the fp32 ONNX graph and accuracy on ``--split``.
"""
from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run as a file: the same as `python -m bench.int8_calibration`
    import os
    import sys
    from pathlib import Path

    _root = str(Path(__file__).resolve().parents[1])
    _path = os.pathsep.join(p for p in (_root, os.environ.get("PYTHONPATH", "")) if p)
    os.execve(sys.executable, [sys.executable, "-m", "bench.int8_calibration", *sys.argv[1:]],
              {**os.environ, "PYTHONPATH": _path})

import argparse
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from .common import log, machine


def variants(convs: list[str], heads: list[str]) -> dict[str, dict[str, Any]]:
    """quantize_static options of each variant, on top of fervid's own (QDQ, per-channel int8 weights)."""
    from onnxruntime.quantization import CalibrationMethod, QuantType

    return {
        "fervid (MinMax)": {},
        "entropy": {"calibrate_method": CalibrationMethod.Entropy},
        "percentile": {"calibrate_method": CalibrationMethod.Percentile},
        "first+last in float": {"nodes_to_exclude": convs[:1] + heads},
        "first in float": {"nodes_to_exclude": convs[:1]},
        "last in float": {"nodes_to_exclude": heads},
        "signed activations": {"activation_type": QuantType.QInt8, "extra_options": {"ActivationSymmetric": True}},
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="a .safetensors model or a training run folder")
    ap.add_argument("--data", default="../shared/datasets/fer2013", help="FER-2013 source (calibration and scoring)")
    ap.add_argument("--split", default="PublicTest")
    ap.add_argument("--calib", type=int, default=512, help="calibration faces from Training (fervid's default)")
    args = ap.parse_args(argv)

    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quant_pre_process,
                                          quantize_static)

    from fervid.data import load_faces
    from fervid.export import INPUT_NAME, calibration_faces, export_in_memory
    from fervid.preprocess import normalize

    info = machine(os.cpu_count() or 1)
    log(f"machine: {info['cpu']}, {info['cores']} cores, load average {info['load_average']}")
    data, _ = export_in_memory(args.model)
    faces = load_faces(args.data, args.split)
    x, y = normalize(faces.images), np.asarray(faces.labels)
    calib = calibration_faces(args.data, n=args.calib)

    def predict(blob: bytes) -> np.ndarray:
        session = ort.InferenceSession(blob, providers=["CPUExecutionProvider"])
        return np.concatenate([session.run(None, {INPUT_NAME: x[i:i + 256]})[0].argmax(1)
                               for i in range(0, len(x), 256)])

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = [calib[i:i + 64] for i in range(0, len(calib), 64)]

        def get_next(self):
            return {INPUT_NAME: self.batches.pop()} if self.batches else None

    reference = predict(data)
    graph = onnx.load_from_string(data).graph
    convs = [n.name for n in graph.node if n.op_type == "Conv"]
    heads = [n.name for n in graph.node if n.op_type in ("Gemm", "MatMul")]
    print(f"| variant | agreement with fp32 | {args.split} accuracy | seconds |")
    print("| --- | --- | --- | --- |")
    print(f"| fp32 | 100.00% | {np.mean(reference == y):.2%} | - |")
    with tempfile.TemporaryDirectory(prefix="fervid-int8-") as tmp:
        src, pre = Path(tmp) / "fp32.onnx", Path(tmp) / "pre.onnx"
        src.write_bytes(data)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        for i, (name, options) in enumerate(variants(convs, heads).items()):
            kwargs = {"quant_format": QuantFormat.QDQ, "activation_type": QuantType.QUInt8,
                      "weight_type": QuantType.QInt8, "per_channel": True, **options}
            dst = Path(tmp) / f"v{i}.onnx"
            start = time.perf_counter()
            quantize_static(str(pre), str(dst), Reader(), **kwargs)
            out = predict(dst.read_bytes())
            print(f"| {name} | {np.mean(out == reference):.2%} | {np.mean(out == y):.2%} | "
                  f"{time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main()
