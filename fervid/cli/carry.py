"""``fervid carry``: move a long training run between machines in a file small enough to commit."""
from __future__ import annotations

import argparse


def run_pack(args: argparse.Namespace) -> int:
    from ..training.carry import pack

    info = pack(args.run, args.output, overwrite=args.overwrite)
    print(f"{info['path']}: after epoch {info['epoch']} of {info['epochs']} "
          f"({info['bytes'] / 1e6:.1f} MB); go on with: fervid carry unpack {info['path']} --out RUN_DIR")
    return 0


def run_unpack(args: argparse.Namespace) -> int:
    from ..training.carry import unpack

    info = unpack(args.file, args.out)
    print(f"{info['out']}: ready to resume at epoch {info['epoch'] + 1} of {info['epochs']}; "
          f"run: fervid train --resume {info['out']}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("carry", help="pack a training run into a small resume file, or unpack one",
                       description="A run's last.pt resumes it exactly but is large (47 MB for vgg_m). "
                       "'pack' keeps the fp16 weights, config, schedule position and metrics (8 MB for vgg_m); "
                       "'unpack' turns that back into a run folder that 'fervid train --resume' continues. "
                       "Momentum and the weight average (EMA) start again, and so does best-model selection.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    pk = verbs.add_parser("pack", help="write RUN_DIR's last checkpoint as a small resume file")
    pk.add_argument("run", metavar="RUN_DIR", help="a fervid training run folder (holds last.pt)")
    pk.add_argument("-o", "--output", required=True, metavar="FILE", help="the resume file (.safetensors)")
    pk.add_argument("--overwrite", action="store_true", help="replace FILE if it exists")
    pk.set_defaults(func=run_pack)
    up = verbs.add_parser("unpack", help="rebuild a resumable run folder from a resume file")
    up.add_argument("file", metavar="FILE", help="a file written by 'fervid carry pack'")
    up.add_argument("--out", required=True, metavar="RUN_DIR", help="an empty or new folder for the run")
    up.set_defaults(func=run_unpack)
