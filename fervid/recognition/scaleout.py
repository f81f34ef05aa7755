"""``fervid predict --ray``: the recognition of ``fervid predict`` over millions of images on Ray Data.

The work is the single-process command's, step for step: the same :func:`fervid.batch.expand_inputs`
for folders and globs, the same :func:`fervid.recognize.read_image` checks (or
:func:`fervid.recognize.decode_image` for bytes already read), the same :class:`Recognizer`,
the same :func:`fervid.batch.face_rows` / :func:`fervid.batch.error_row` rows and the same
:class:`fervid.batch.TableWriter` for the CSV (or JSONL) text. What Ray adds is where it runs:

- the image list becomes a Ray Dataset of paths (small blocks, so every worker gets some);
- ``map_batches`` over an actor pool: each actor loads one ``Recognizer`` once, with ONNX
  Runtime and the detector set to the actor's CPUs, and turns a batch of paths into rows;
- a datasink writes each write task's rows as one Parquet shard and one CSV (or JSONL) shard,
  named after the task, so a task retried after its worker died rewrites the same files:
  every input is in the output exactly once.

Ray retries the batches of a killed actor and restarts it (Ray Data's defaults for actor
pools: ``max_restarts=-1``, ``max_task_retries=-1``). Reads and decoding happen in the actors,
so what travels through the object store is paths in and rows out (about 0.3 KB a face),
never pixels. ``ray`` is imported only when a function here runs, so ``fervid`` works without it.
"""
from __future__ import annotations

import math
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .image_files import TableWriter, error_row, face_rows
from ..errors import BadInputError, FervidError
from ..modelfile import portable_reference
from .scaleout_io import (InputList, _fs_and_path, _is_uri, list_images, read_path_list, rows_to_table,  # noqa: F401
                          table_schema, table_to_rows)

#: Files given as inputs that are lists of image paths rather than images.
#: ``--ray`` values that are cluster addresses (anything else after ``--ray`` is an input).
_ADDRESS = re.compile(r"^(local|auto|ray://.+|[A-Za-z0-9_.\-\[\]:]+:\d+)$")


def is_address(text: str | None) -> bool:
    """True for what ``ray.init(address=...)`` takes: ``auto``, ``ray://host:10001``, ``host:6379``
    (and ``local``: start Ray here). ``--ray photos/`` means no address and an input ``photos/``."""
    return bool(text) and bool(_ADDRESS.match(text)) and not Path(text).exists()


def init_ray(address: str | None = None, *, num_cpus: int | None = None, quiet: bool = False) -> Any:
    """Connect to the cluster at ``address`` or, without one (or ``local``), start Ray on this machine;
    a Ray already initialised in this process (a notebook, a test) is used as it is."""
    import ray

    if not ray.is_initialized():
        kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": not quiet}
        if address in (None, "", "local"):
            # "local" starts a new Ray here even where a stale /tmp/ray/ray_current_cluster names another
            kw.update(address="local", num_cpus=num_cpus)
        else:
            kw["address"] = address
        try:
            ray.init(**kw)
        except ConnectionError as e:
            raise FervidError(f"cannot connect to the Ray cluster at {address}: {str(e).splitlines()[0]}") from None
        except Exception as e:  # noqa: BLE001  Ray raises plain Exception when its node does not start
            ray.shutdown()
            if kw.get("address") != "local":
                raise
            # Ray's raylet gives its agents a fixed 15 s to start (ray-project/ray#65983): too little on a
            # machine busy with other work. A Ray started beforehand has no such problem.
            raise FervidError(f"Ray could not start on this machine ({str(e).splitlines()[0]}); start it once "
                              "with `ray start --head` and pass --ray auto") from None
    return ray


class RecognizeBatch:
    """A Ray Data actor: one :class:`Recognizer`, loaded once; batches of paths (or bytes) in, rows out.

    A batch may hold ``path`` (local or a pyarrow URI), ``bytes`` (an image already read, e.g. by
    ``ray.data.read_binary_files(..., include_paths=True)``) and ``error`` (an input that matched
    nothing: its error row is passed through, so the table accounts for every input).
    """

    def __init__(self, model: str | None = None, *, threads: int | None = None, max_bytes: int | None = None,
                 path_column: str = "path", bytes_column: str = "bytes", **recognizer_kwargs: Any):
        from ..images import MAX_IMAGE_BYTES
        from .recognize import Recognizer

        self.recognizer = Recognizer(model, threads=threads, **recognizer_kwargs)
        self.classes = list(self.recognizer.classes)
        self.max_bytes = int(max_bytes or MAX_IMAGE_BYTES)
        self.path_column, self.bytes_column = path_column, bytes_column

    def _image(self, path: str, data: bytes | None, source: str):
        from ..files import mb
        from ..images import decode_image, read_image

        if data is None and _is_uri(source):
            filesystem, where = _fs_and_path(source)
            try:
                size = filesystem.get_file_info(where).size
                if size is not None and size > self.max_bytes:
                    raise BadInputError(f"{path}: file is {mb(size)}; fervid reads up to {mb(self.max_bytes)} "
                                        "(raise it with --max-image-mb)")
                with filesystem.open_input_stream(where) as fh:
                    data = fh.read()
            except OSError as e:
                raise BadInputError(f"{path}: cannot read ({e})") from None
        if data is None and source != path:  # read where it is, report it as the user named it
            try:
                return read_image(source, max_bytes=self.max_bytes, flag="--max-image-mb")
            except BadInputError as e:
                raise BadInputError(str(e).replace(source, path, 1)) from None
        if data is None:
            return read_image(path, max_bytes=self.max_bytes, flag="--max-image-mb")
        if len(data) > self.max_bytes:
            raise BadInputError(f"{path}: file is {mb(len(data))}; fervid reads up to {mb(self.max_bytes)} "
                                "(raise it with --max-image-mb)")
        return decode_image(bytes(data), path)

    def rows(self, path: str, data: bytes | None = None, error: str | None = None,
             source: str | None = None) -> list[dict[str, Any]]:
        """The rows ``fervid predict`` writes for one input (the same functions make them).
        ``path`` names the image in the table and in messages; ``source`` is where it is read."""
        if error:
            return [error_row(path, error)]
        try:
            image = self._image(path, data, source or path)
        except BadInputError as e:
            return [error_row(path, str(e))]
        return face_rows(path, self.recognizer.predict(image), self.classes)

    def __call__(self, batch):
        names = batch.column_names
        paths = batch.column(self.path_column).to_pylist()
        datas = (batch.column(self.bytes_column).to_pylist() if self.bytes_column in names
                 else [None] * len(paths))
        errors = batch.column("error").to_pylist() if "error" in names else [None] * len(paths)
        sources = batch.column("source").to_pylist() if "source" in names else paths
        rows: list[dict[str, Any]] = []
        for path, source, data, error in zip(paths, sources, datas, errors):
            rows += self.rows(str(path), data, error, source=source)
        return rows_to_table(rows, self.classes)


def recognize_dataset(ds, model: str | os.PathLike | None = None, *, workers: int | None = None,
                      cpus_per_worker: float = 1, batch_size: int = 16, path_column: str = "path",
                      bytes_column: str = "bytes", max_image_mb: float | None = None, **recognizer_kwargs: Any):
    """A Ray Dataset of the table ``fervid predict`` writes, for a Dataset of images a user already has.

    ``ds`` has a ``path`` column (local paths every node can read, or pyarrow URIs), optionally
    ``bytes`` (the file's bytes: ``ray.data.read_binary_files(src, include_paths=True)``).
    ``workers``: actors in the pool (default: the cluster's CPUs / ``cpus_per_worker``), each with
    ``cpus_per_worker`` CPUs and that many ONNX Runtime threads. ``recognizer_kwargs`` go to
    :class:`fervid.recognize.Recognizer` (``min_confidence``, ``classes``, ``prior``...).
    The result is lazy: write it (``.write_parquet``) or iterate it.
    """
    import ray
    from ray.data import ActorPoolStrategy

    if workers is None:
        cpus = ray.cluster_resources().get("CPU", 1)
        workers = max(1, int(cpus // max(cpus_per_worker, 1e-9)))
    threads = max(1, math.floor(cpus_per_worker))
    max_bytes = None if max_image_mb is None else int(max_image_mb * 1_000_000)
    return ds.map_batches(RecognizeBatch, batch_format="pyarrow", batch_size=batch_size,
                          compute=ActorPoolStrategy(size=int(workers)), num_cpus=cpus_per_worker,
                          fn_constructor_kwargs={"model": None if model is None else str(model), "threads": threads,
                                                 "max_bytes": max_bytes, "path_column": path_column,
                                                 "bytes_column": bytes_column, **recognizer_kwargs})


def paths_dataset(listing: InputList, workers: int, block_rows: int | None = None):
    """A Ray Dataset of ``path`` (as the user named it, the table's ``file``), ``source`` (the absolute
    path a worker reads, whatever its working folder) and ``error`` rows, in blocks small enough that
    every worker gets several.

    Built from Arrow tables held by the driver (no read tasks: on a machine whose CPUs all go to
    the actors, a read task waiting for a CPU would wait forever)."""
    import pyarrow as pa
    import ray

    rows = ([(str(e).split(": ", 1)[0], None, str(e)) for e in listing.errors]
            + [(p, p if _is_uri(p) else os.path.abspath(p), None) for p in listing.paths])
    if not rows:
        raise BadInputError("no inputs to recognise")
    if block_rows is None:
        block_rows = max(1, min(256, math.ceil(len(rows) / (4 * max(1, workers)))))
    schema = pa.schema([("path", pa.string()), ("source", pa.string()), ("error", pa.string())])
    tables = [pa.table({name: [r[k] for r in rows[i:i + block_rows]] for k, name in enumerate(schema.names)},
                       schema=schema) for i in range(0, len(rows), block_rows)]
    return ray.data.from_arrow(tables)


# --- the output ------------------------------------------------------------------------------

def _make_sink(out: str, classes: list[str], fmt: str):
    from ray.data.datasource import Datasink

    class TableSink(Datasink):
        """Each write task's rows as ``parquet/part-<task>.parquet`` and ``<fmt>/part-<task>.<fmt>``
        under ``out`` (a folder, or a URI pyarrow writes to). Named after the task, written to a
        temporary name and renamed, so a retried task replaces its shard instead of adding one."""

        def __init__(self):
            self.out, self.classes, self.fmt = out, classes, fmt

        def _fs(self):
            from pyarrow import fs

            if _is_uri(self.out):
                return fs.FileSystem.from_uri(self.out)
            return fs.LocalFileSystem(), str(Path(self.out).resolve())

        def on_write_start(self, schema=None) -> None:
            filesystem, base = self._fs()
            for sub in ("parquet", self.fmt):
                filesystem.create_dir(f"{base}/{sub}", recursive=True)

        def write(self, blocks, ctx) -> dict[str, Any]:
            import io

            import pyarrow as pa
            import pyarrow.parquet as pq

            tables = [b if isinstance(b, pa.Table) else pa.Table.from_pandas(b) for b in blocks]
            stats = {"rows": 0, "images": 0, "faces": 0, "no_face": 0, "errors": []}
            tables = [t for t in tables if t.num_rows]
            if not tables:
                return stats
            table = pa.concat_tables(tables)
            filesystem, base = self._fs()
            name = f"part-{ctx.task_idx:06d}"
            text = io.StringIO(newline="")
            writer = TableWriter(text, self.fmt, self.classes)
            for row in table_to_rows(table, self.classes):
                writer.write(row)
                if row["status"] == "error":
                    stats["errors"].append(row["error"])
                else:
                    stats["images"] += row["face"] in (None, 0)
                    stats["faces"] += row["status"] == "ok"
                    stats["no_face"] += row["status"] == "no_face"
            stats["rows"] = table.num_rows
            for sub, ext, write in (("parquet", "parquet", lambda f: pq.write_table(table, f)),
                                    (self.fmt, self.fmt, lambda f: f.write(text.getvalue().encode("utf-8")))):
                final = f"{base}/{sub}/{name}.{ext}"
                tmp = f"{base}/{sub}/.{name}.{ext}.tmp"
                with filesystem.open_output_stream(tmp) as f:
                    write(f)
                filesystem.move(tmp, final)  # a retried task replaces the shard, never adds one
            return stats

        def on_write_complete(self, write_result) -> None:
            self.result = write_result

    return TableSink()


@dataclass
class RaySummary:
    images: int = 0
    faces: int = 0
    no_face: int = 0
    rows: int = 0
    errors: list[str] = field(default_factory=list)
    shards: int = 0


def write_table(ds, out: str | os.PathLike, classes: list[str], fmt: str = "csv") -> RaySummary:
    """Run ``ds`` (from :func:`recognize_dataset`) and write its table under ``out``:
    ``parquet/part-*.parquet`` and ``csv/part-*.csv`` (or ``jsonl/``). Returns the counts."""
    if fmt not in ("csv", "jsonl"):
        raise BadInputError(f"unknown table format {fmt!r} (use csv or jsonl)")
    sink = _make_sink(str(out), list(classes), fmt)
    ds.write_datasink(sink)
    summary = RaySummary()
    result = getattr(sink, "result", None)
    for stats in (getattr(result, "write_returns", None) or []):
        if not stats:
            continue
        summary.shards += stats["rows"] > 0
        summary.images += stats["images"]
        summary.faces += stats["faces"]
        summary.no_face += stats["no_face"]
        summary.rows += stats["rows"]
        summary.errors += stats["errors"]
    return summary


def predict(inputs: list[str], out_dir: str | os.PathLike, *, address: str | None = None,
            model: str | os.PathLike | None = None, workers: int | None = None, cpus_per_worker: float = 1,
            batch_size: int = 16, fmt: str = "csv", overwrite: bool = False, max_image_mb: float | None = None,
            progress: bool = True, **recognizer_kwargs: Any) -> RaySummary:
    """``fervid predict --ray``: list ``inputs``, recognise them on Ray, write the table shards."""
    import shutil

    from ..files import check_output
    from .recognize import Recognizer

    out = str(out_dir) if _is_uri(str(out_dir)) else os.path.abspath(out_dir)  # workers have their own cwd
    if model is not None and not _is_uri(str(model)):
        model = portable_reference(model)
    if not _is_uri(out):
        check_output(out, folder=True)
        existing = [Path(out) / sub for sub in ("parquet", fmt) if (Path(out) / sub).exists()
                    and any((Path(out) / sub).iterdir())]
        if existing and not overwrite:
            raise BadInputError(f"{existing[0]}: already holds table shards (use --overwrite to replace them, "
                                "or another --out-dir)")
        for d in existing:
            shutil.rmtree(d)
    # the model and the options are checked here, once, before any worker starts
    classes = Recognizer(model, threads=1, **recognizer_kwargs).classes
    listing = list_images(inputs, skip=None if _is_uri(out) else out)
    ray = init_ray(address, quiet=not progress)
    ray.data.DataContext.get_current().enable_progress_bars = progress
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1) // max(cpus_per_worker, 1e-9)))
    ds = paths_dataset(listing, workers)
    ds = recognize_dataset(ds, model, workers=workers, cpus_per_worker=cpus_per_worker, batch_size=batch_size,
                           max_image_mb=max_image_mb, **recognizer_kwargs)
    return write_table(ds, out, classes, fmt)


def read_table(out_dir: str | os.PathLike, fmt: str = "parquet"):
    """Every shard of a ``--ray`` table as one Arrow table (for checks and small outputs)."""
    import pyarrow as pa
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    files = sorted((Path(out_dir) / fmt).glob(f"part-*.{fmt}"))
    if fmt == "parquet":
        return pa.concat_tables([pq.read_table(f) for f in files])
    return pa.concat_tables([pcsv.read_csv(f) for f in files])


def settings_kwargs(settings) -> dict[str, Any]:
    """``Recognizer`` keyword arguments (all but threads, which each worker sets) of ``RecognizerSettings``."""
    import dataclasses

    return {k: v for k, v in dataclasses.asdict(settings).items() if k != "threads"}


def run_cli(args) -> int:
    """``fervid predict --ray``: the flags of ``fervid predict`` (see fervid/cli/predict.py)."""
    from .settings import RecognizerSettings

    inputs = list(args.inputs)
    address = args.ray
    if address and not is_address(address):  # `--ray photos/`: no address, and photos/ is an input
        inputs.insert(0, address)
        address = None
    kw = settings_kwargs(RecognizerSettings.from_args(args))
    summary = predict(inputs, args.out_dir, address=address, model=args.model, workers=args.workers,
                      cpus_per_worker=args.cpus_per_worker, batch_size=args.batch_size, fmt=args.format,
                      overwrite=args.overwrite, max_image_mb=args.max_image_mb, progress=not args.quiet, **kw)
    for e in summary.errors[:20]:
        print(f"fervid predict: error: {e}", file=sys.stderr)
    if len(summary.errors) > 20:
        print(f"fervid predict: ... and {len(summary.errors) - 20} more errors (status=error rows in the table)",
              file=sys.stderr)
    parts = [f"{summary.faces} face{'s' * (summary.faces != 1)} in {summary.images} image{'s' * (summary.images != 1)}",
             f"{summary.no_face} without a face"]
    if summary.errors:
        parts.append(f"{len(summary.errors)} failed")
    print(f"{', '.join(parts)}; tables {args.out_dir}/parquet/ and {args.out_dir}/{args.format}/ "
          f"({summary.shards} shard{'s' * (summary.shards != 1)} each)", file=sys.stderr if args.quiet else sys.stdout)
    return 2 if summary.errors else 0
