"""``fervid plot``: training curves (accuracy and loss, train against val) from a run's metrics."""
from __future__ import annotations

import argparse
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from ..analysis.plots import METRICS_FILE, best_epoch, plot_curves, read_metrics

    src = Path(args.metrics).expanduser()
    rows = read_metrics(src)
    out = Path(args.output) if args.output else (src if src.is_dir() else src.parent) / "curves.png"
    from ..files import check_output

    check_output(out)
    plot_curves(rows, out, title=args.title or "", overwrite=args.overwrite)
    best = best_epoch(rows)
    acc = next(r["val_acc"] for r in reversed(rows) if int(r["epoch"]) == best) if best is not None else float("nan")
    print(f"{len(rows)} epochs from {src / METRICS_FILE if src.is_dir() else src}; "
          f"best val accuracy {acc:.4f} at epoch {best}")
    print(f"wrote {out}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("plot", help="plot training curves of a run",
                       description="Accuracy and loss curves (train vs val) of a training run, best epoch marked.")
    p.add_argument("metrics", metavar="RUN_DIR_OR_METRICS",
                   help="a training run folder or its metrics.jsonl")
    p.add_argument("-o", "--output", help="PNG to write (default: curves.png beside the metrics)")
    p.add_argument("--title", help="figure title (default: number of epochs)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing PNG")
    p.set_defaults(func=run)
