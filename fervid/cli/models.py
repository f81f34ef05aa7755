"""``fervid models``: the registered architectures with their size and cost, to pick one for training,
and the trained models shipped in the package, by the name ``--model`` takes."""
from __future__ import annotations

import argparse
import json


def model_table(num_classes: int = 7) -> list[dict]:
    """Name, parameters, MFLOPs per 48x48 face and description of every registered architecture."""
    from ..models import count_flops, count_params, create_model, describe_model, list_models

    rows = []
    for name in list_models():
        model = create_model(name, num_classes=num_classes)
        rows.append({"name": name, "params": count_params(model),
                     "mflops": round(count_flops(model) / 1e6, 2), "description": describe_model(name)})
    return rows


def shipped_table() -> list[dict]:
    """Name, architecture, classes, validation accuracy and description of every shipped model
    (from the sidecar JSON beside each, so listing them needs neither PyTorch nor ONNX Runtime)."""
    from ..modelfile import ASSETS, SHIPPED_MODELS

    rows = []
    for name, (onnx, _, description) in SHIPPED_MODELS.items():
        sidecar = (ASSETS / onnx).with_suffix(".json")
        meta = json.loads(sidecar.read_text()) if sidecar.is_file() else {}
        metrics = meta.get("metrics") or {}
        rows.append({"name": name, "installed": (ASSETS / onnx).is_file(), "arch": meta.get("arch"),
                     "classes": meta.get("classes"), "val_acc": metrics.get("val_acc"),
                     "weights": (meta.get("onnx") or {}).get("weights"), "description": description})
    return rows


def format_shipped(rows: list[dict]) -> str:
    lines = ["shipped models (--model NAME, Recognizer(NAME)):"]
    for r in rows:
        acc = f"{r['val_acc']:.2%}" if isinstance(r["val_acc"], (int, float)) else "-"
        state = f"{r['arch']}, {len(r['classes'] or [])} classes, val acc {acc}, {r['weights']}" if r["installed"] \
            else "not installed"
        lines.append(f"  {r['name']:<8}  {state}: {r['description']}")
    return "\n".join(lines)


def format_table(rows: list[dict]) -> str:
    width = max([len("model")] + [len(r["name"]) for r in rows])
    lines = [f"{'model':<{width}}  {'params':>9}  {'MFLOPs':>8}  description"]
    for r in rows:
        lines.append(f"{r['name']:<{width}}  {r['params'] / 1e6:>8.2f}M  {r['mflops']:>8.1f}  {r['description']}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if args.num_classes < 1:
        from ..errors import BadInputError

        raise BadInputError(f"--num-classes must be at least 1, got {args.num_classes}")
    rows = model_table(args.num_classes)
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows) + "\n\n" + format_shipped(shipped_table()))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the model architectures",
                       description="List every registered architecture with parameter count, MFLOPs per face "
                       "(multiply and add counted apart) and a one-line description, then the trained models shipped "
                       "with fervid (fer2013, the default, and ferplus) by the name --model takes.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--num-classes", type=int, default=7, help="classes of the head to count (default: 7)")
    p.set_defaults(func=run)
