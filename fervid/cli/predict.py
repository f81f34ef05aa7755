"""``fervid predict``: expressions of the faces in image files, as annotated copies and one table."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .common import add_recognizer_flags, recognizer_settings


def _positive_mb(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of megabytes, got {text!r}") from None
    if not v > 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return v


def run(args: argparse.Namespace) -> int:
    if args.ray is not None:  # the same recognition on a Ray cluster (fervid/recognition/scaleout.py)
        from ..recognition.scaleout import run_cli

        return run_cli(args)
    import cv2
    from tqdm import tqdm

    from ..errors import BadInputError, OutputError
    from ..files import atomic_path, check_output, nearly_full
    from ..images import read_image
    from ..recognition.draw import annotate
    from ..recognition.image_files import TableWriter, annotated_path, describe, error_row, expand_inputs, face_rows
    from ..recognition.recognize import Recognizer

    settings = recognizer_settings(args)  # first: a bad flag is one line before any work
    out_dir = Path(args.out_dir)
    table = out_dir / f"predictions.{args.format}"
    check_output(out_dir, folder=True)  # before the model loads and any image is read
    max_bytes = int(args.max_image_mb * 1_000_000)
    recognizer = Recognizer(args.model, settings=settings)
    expanded = expand_inputs(args.inputs, skip=out_dir)
    if not args.overwrite:  # refuse before any work rather than after half of it
        planned = [table] + ([] if args.no_annotate else [annotated_path(out_dir, f) for f in expanded.files])
        existing = [p for p in planned if p.exists()]
        if existing:
            more = f" and {len(existing) - 1} more output file(s)" if len(existing) > 1 else ""
            raise BadInputError(f"{existing[0]}: already exists{more} (use --overwrite to replace, "
                                "or another --out-dir)")

    def say(line: str, err: bool = False) -> None:
        if err or not args.quiet:
            tqdm.write(line, file=sys.stderr if err else sys.stdout)

    n_faces = n_images = n_empty = 0
    failures = list(expanded.errors)
    for e in expanded.errors:
        say(f"fervid predict: error: {e}", err=True)
    with atomic_path(table, overwrite=args.overwrite) as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = TableWriter(fh, args.format, recognizer.classes)
        for e in expanded.errors:
            writer.write(error_row(str(e).split(": ", 1)[0], str(e)))
        bar = tqdm(expanded.files, desc="predict", unit="img", leave=False,
                   disable=len(expanded.files) < 10 or not sys.stderr.isatty())
        for item in bar:
            file = str(item.path)
            try:
                image = read_image(item.path, max_bytes=max_bytes, flag="--max-image-mb")
            except BadInputError as e:
                failures.append(e)
                say(f"fervid predict: error: {e}", err=True)
                writer.write(error_row(file, str(e)))
                continue
            faces = recognizer.predict(image)
            n_images += 1
            n_faces += len(faces)
            n_empty += not faces
            for row in face_rows(file, faces, recognizer.classes):
                writer.write(row)
            if not args.no_annotate:
                dest = annotated_path(out_dir, item)
                with atomic_path(dest, overwrite=True) as tmp_img:
                    if not cv2.imwrite(str(tmp_img), annotate(image, faces)):
                        why = "no space left on device" if nearly_full(dest.parent) else "OpenCV could not encode it"
                        raise OutputError(f"{dest}: cannot write: {why}")
            say(describe(file, faces))
        bar.close()
    parts = [f"{n_faces} face{'s' * (n_faces != 1)} in {n_images} image{'s' * (n_images != 1)}",
             f"{n_empty} without a face"]
    if failures:
        parts.append(f"{len(failures)} failed")
    dest = f"table {table}" + ("" if args.no_annotate else f", annotated images in {out_dir}/")
    print(f"{', '.join(parts)}; {dest}", file=sys.stderr if args.quiet else sys.stdout)
    return 2 if failures else 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="recognise expressions in image files",
                       description="Detect faces in images, recognise their expressions, write annotated "
                       "copies and one table (a row per face; images without a face and unreadable files "
                       "get a row too). Exit code 2 if any input failed.")
    p.add_argument("inputs", nargs="+", metavar="PATH", help="image files, folders (searched recursively) or globs")
    p.add_argument("-o", "--out-dir", default="fervid-out", help="where annotated images and the table go "
                   "(default: fervid-out)")
    p.add_argument("--format", choices=("csv", "jsonl"), default="csv",
                   help="table format: predictions.csv or predictions.jsonl (default: csv)")
    add_recognizer_flags(p, detect=True)
    p.add_argument("--max-image-mb", type=_positive_mb, default=256.0, metavar="MB",
                   help="largest image file read, checked before reading it (default: 256)")
    p.add_argument("--no-annotate", action="store_true", help="write the table only, no annotated images")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("-q", "--quiet", action="store_true", help="no line per image (errors and summary only)")
    add_ray_flags(p, "image", "the table is written as Parquet and CSV (or JSONL) shards under --out-dir, "
                  "with no annotated images")
    p.add_argument("--batch-size", type=int, default=16, metavar="N",
                   help="with --ray: images per batch sent to a worker (default: 16)")
    p.set_defaults(func=run)


def add_ray_flags(p: argparse.ArgumentParser, unit: str, writes: str) -> None:
    """--ray [ADDRESS], --workers, --cpus-per-worker (``fervid predict`` and ``fervid video``)."""
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help=f"run on Ray (pip install 'fervid[ray]'): on the cluster at ADDRESS (ray://host:10001, "
                   f"host:6379, auto), or without one on Ray started on this machine; every {unit} path must be "
                   f"readable by every node and fervid installed on each; {writes}")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="with --ray: Ray workers (default: the cluster's CPUs / --cpus-per-worker)")
    p.add_argument("--cpus-per-worker", type=float, default=1, metavar="N",
                   help="with --ray: CPUs each worker reserves and uses as ONNX Runtime threads (default: 1)")
