"""``fervid export``: a ``.safetensors`` model (or run folder) to ONNX for torch-free recognition."""
from __future__ import annotations

import argparse
from pathlib import Path


def _opset(text: str) -> int:
    v = int(text)
    if v < 17:
        raise argparse.ArgumentTypeError(f"opset {v} is too old: fervid exports opset 17 or newer")
    return v


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} is not a positive number of faces")
    return v


def run(args: argparse.Namespace) -> int:
    from ..errors import BadInputError
    from ..export import calibration_faces, export_model
    from ..files import check_output

    if args.output:
        check_output(args.output)  # before the export and its parity check run

    if args.int8 and not args.calib:
        raise BadInputError("--int8 needs --calib: a FER-2013 source (fer2013.csv or the Kaggle folder) "
                            "whose faces set the activation ranges")
    if args.calib and not args.int8:
        raise BadInputError("--calib is only used with --int8")
    calib = calibration_faces(args.calib, args.calib_split, args.calib_faces) if args.int8 else None
    info = export_model(args.model, args.output, overwrite=args.overwrite, opset=args.opset,
                        fp16_weights=args.fp16_weights, int8_calib=calib)
    acc = (info.get("metrics") or {}).get("val_acc")
    print(f"wrote {info['path']} ({info['bytes'] / 1e6:.2f} MB, {info['arch']}, {len(info['classes'])} classes"
          f"{f', val acc {acc:.4f}' if acc is not None else ''}) and {Path(info['json']).name}; "
          f"ONNX Runtime vs PyTorch max probability difference {info['parity']:.1e}"
          + (f"; fp16 rounding moved probabilities by at most {info['fp16_rounding']:.1e}"
             if info.get("fp16_rounding") is not None else "")
          + (f"; int8 gives fp32's top answer on {info['int8_agreement']:.1%} of {len(calib)} calibration faces"
             if calib is not None else ""))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX (recognition then needs no PyTorch)",
                       description="Export a fervid .safetensors model or training run folder to ONNX "
                       "(dynamic batch, input 'input' [N,1,48,48] float32, output 'logits'), with its "
                       "metadata inside the file and in a sidecar OUT.json.")
    p.add_argument("model", metavar="MODEL", help="a .safetensors fervid model or a training run folder")
    p.add_argument("-o", "--output", metavar="OUT.onnx",
                   help="output file (default: the model's path with .onnx)")
    p.add_argument("--opset", type=_opset, default=17, help="ONNX opset version (default: 17)")
    p.add_argument("--fp16-weights", action="store_true",
                   help="store weights as fp16 (half the file size); inference still runs in fp32")
    p.add_argument("--int8", action="store_true",
                   help="quantise to int8 (static, calibrated on --calib faces): ~3x the faces/s of fp32 on a CPU")
    p.add_argument("--calib", metavar="SOURCE",
                   help="FER-2013 source (fer2013.csv or Kaggle folder) of the --int8 calibration faces")
    p.add_argument("--calib-split", default="Training", metavar="SPLIT",
                   help="split of --calib to calibrate on (default: Training; never the split you score on)")
    p.add_argument("--calib-faces", type=_positive, default=512, metavar="N",
                   help="how many seeded faces of that split calibrate (default: 512)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT.onnx / OUT.json if they exist")
    p.set_defaults(func=run)
