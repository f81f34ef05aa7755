"""ONNX Runtime sessions, made one way: CPU provider, quiet, and the threads asked for.

Used for the face detector, the classifier and the checks of an export, so they run with the
same options (``threads``: intra-op threads, inter-op kept at 1; None: ONNX Runtime's default).
"""
from __future__ import annotations

import os
from typing import Any


def make_session(model: bytes | str | os.PathLike, threads: int | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` of ``model`` (a path or the serialised graph).
    Whatever ONNX Runtime raises for a file it cannot load is left to the caller to word."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, opts, providers=["CPUExecutionProvider"])
