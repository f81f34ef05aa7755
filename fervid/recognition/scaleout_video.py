"""``fervid video --ray``: many videos on a Ray cluster, one task per video.

Each task runs :func:`fervid.video.process_video` (the single-process command's function, with
its tracker and smoothing) on one video, writing its outputs into a private temporary folder on
the worker, and returns their bytes; the driver writes them under ``--out-dir`` as
``fervid video`` names them (``NAME.fervid.mp4``, ``NAME.fervid.csv``, ``NAME.fervid_timelines/``),
each atomically, as tasks finish. A task whose worker dies is retried by Ray from the start of
its video, and only a finished task's outputs are written, so each video's outputs are written once.

Long videos are not split into time segments: tracking and smoothing carry state from frame
to frame, so a segment would start with no tracks and re-numbered faces, and seeking an
mp4v/H.264 file to an exact frame with OpenCV is not reliable (it lands on key frames). With
many files, one task per video already keeps every worker busy; one very long video runs at
single-process speed.
"""
from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BadInputError
from ..modelfile import portable_reference


def _video_task(source: str, name: str, model: str | None, recognizer_kwargs: dict[str, Any], every: int,
                smoothing: float, video: bool, timeline: bool, threads: int) -> dict[str, Any]:
    """One video on a worker: outputs' bytes by relative name, the summary line, or the error."""
    import tempfile

    from .recognize import Recognizer
    from .video import process_video

    with tempfile.TemporaryDirectory(prefix="fervid-video-") as tmp:
        base = Path(tmp) / f"{name}.fervid.mp4"
        try:
            rec = Recognizer(model, threads=threads, **recognizer_kwargs)
            summary = process_video(rec, source, base if video else None, csv_path=base.with_suffix(".csv"),
                                    timeline_dir=base.with_name(base.stem + "_timelines") if timeline else None,
                                    every=every, smoothing=smoothing, progress=False, notify=lambda _m: None)
        except BadInputError as e:
            return {"error": str(e)}
        files = {}
        for out in summary.outputs:
            p = Path(out)
            files[str(p.relative_to(tmp))] = p.read_bytes()
        return {"files": files, "line": summary.line(), "warnings": summary.warnings,
                "frames": summary.frames}


@dataclass
class VideoRunSummary:
    done: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)


def output_names(inputs: list[str]) -> list[str]:
    """One output stem per input (the input's own, with ``-2``, ``-3``... for repeats)."""
    names, seen = [], set()
    for src in inputs:
        stem, k = Path(src).stem, 1
        name = stem
        while name in seen:
            k += 1
            name = f"{stem}-{k}"
        seen.add(name)
        names.append(name)
    return names


def process_videos(inputs: list[str], out_dir: str | os.PathLike, *, address: str | None = None,
                   model: str | os.PathLike | None = None, every: int = 1, smoothing: float = 0.5,
                   video: bool = True, timeline: bool = True, workers: int | None = None,
                   cpus_per_worker: float = 1, overwrite: bool = False,
                   progress: bool = True, **recognizer_kwargs: Any) -> VideoRunSummary:
    """Each video of ``inputs`` on Ray; outputs under ``out_dir`` named as ``fervid video`` names them."""
    from tqdm import tqdm

    from ..files import atomic_path, check_output
    from .recognize import Recognizer
    from .scaleout import init_ray
    from .track import check_smoothing

    if int(every) < 1:
        raise BadInputError(f"--every must be >= 1, got {every}")
    check_smoothing(smoothing)
    out = Path(out_dir)
    check_output(out, folder=True)
    model = portable_reference(model)
    Recognizer(model, threads=1, **recognizer_kwargs)  # a bad model or option fails here, once
    names = output_names(inputs)
    if not overwrite:
        for name in names:
            for p in (out / f"{name}.fervid.mp4", out / f"{name}.fervid.csv"):
                if p.exists():
                    raise BadInputError(f"{p}: already exists (use --overwrite to replace it)")
    ray = init_ray(address, quiet=not progress)
    task = ray.remote(num_cpus=cpus_per_worker, max_retries=3, retry_exceptions=False)(_video_task)
    threads = max(1, int(cpus_per_worker))
    todo = list(zip(inputs, names))
    pending: dict[Any, tuple[str, str]] = {}
    limit = len(todo) if not workers else max(1, int(workers))  # tasks in flight at once

    def submit() -> None:
        while todo and len(pending) < limit:
            src, name = todo.pop(0)
            ref = task.remote(os.path.abspath(src), name, None if model is None else str(model), recognizer_kwargs,
                              int(every), float(smoothing), video, timeline, threads)
            pending[ref] = (src, name)

    summary = VideoRunSummary()
    bar = tqdm(total=len(todo), unit="video", desc="videos", disable=not progress)
    submit()
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        src, name = pending.pop(ready[0])
        result = ray.get(ready[0])
        if "error" in result:
            summary.errors.append(result["error"].replace(os.path.abspath(src), src))
        else:
            for rel, data in result["files"].items():
                dest = out / rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(dest, overwrite=True) as tmp:
                    tmp.write_bytes(data)
                summary.written.append(str(dest))
            summary.done.append(src)
            summary.lines.append(result["line"].replace(os.path.abspath(src), src))
        bar.update(1)
        submit()
    bar.close()
    return summary


def run_cli(args) -> int:
    """``fervid video --ray``: the flags of ``fervid video`` (see fervid/cli/video.py)."""
    from .settings import RecognizerSettings
    from .scaleout import is_address, settings_kwargs

    inputs = list(args.inputs)
    address = args.ray
    if address and not is_address(address):
        inputs.insert(0, address)
        address = None
    if args.output or args.csv or args.timeline_dir:
        raise BadInputError("with --ray, outputs are named after each input under --out-dir "
                            "(-o, --csv and --timeline-dir name one video's outputs)")
    kw = settings_kwargs(RecognizerSettings.from_args(args))
    summary = process_videos(inputs, args.out_dir or "fervid-out", address=address, model=args.model,
                             every=args.every, smoothing=args.smoothing, video=not args.no_video,
                             timeline=not args.no_timeline, workers=args.workers, cpus_per_worker=args.cpus_per_worker,
                             overwrite=args.overwrite, progress=not args.quiet, **kw)
    for line in summary.lines:
        print(line)
    for e in summary.errors:
        print(f"fervid video: error: {e}", file=sys.stderr)
    print(f"{len(summary.done)} of {len(inputs)} videos done; outputs in {args.out_dir or 'fervid-out'}/")
    return 2 if summary.errors else 0
