"""Exporting a fervid model to ONNX, so that recognition needs ONNX Runtime and no PyTorch.

The exported graph takes ``input`` ``[N, 1, 48, 48]`` float32 (equalized faces scaled by
:func:`fervid.preprocess.normalize`) and returns ``logits`` ``[N, C]``; the batch is
dynamic so a frame's faces go through in one call. The model's metadata (class names,
normalisation, architecture, how it was trained) travels inside the file under
``metadata_props['fervid']`` and in a sidecar ``.json``, so an ``.onnx`` is usable on its
own. Export runs the model in fp32 eval mode (dropout off, batch-norm running stats), and
every export is checked against PyTorch on a fixed batch before it is written.
"""
from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from . import modelfile
from .data import load_faces
from .errors import BadInputError, FervidError, ModelFileError
from .files import atomic_path, write_text_atomic
from .modelfile import META_KEY
from .onnx_session import make_session
from .preprocess import FACE_SIZE, normalize
from .probabilities import softmax

OPSET = 17
INPUT_NAME = "input"
OUTPUT_NAME = "logits"
#: Largest softmax difference between PyTorch and ONNX Runtime that an export may show.
PARITY_TOLERANCE = 1e-4


def _torch():
    try:
        import torch
    except ImportError:
        raise FervidError("exporting a .safetensors model needs PyTorch: pip install 'fervid[train]' "
                          "(or pass an exported .onnx model)") from None
    return torch


def onnx_bytes(model, meta: dict[str, Any], opset: int = OPSET, fold: bool = True) -> bytes:
    """Serialise a PyTorch fervid model to ONNX bytes with its metadata embedded.

    ``fold=False`` keeps batch norm apart from the convolutions: the weights then stay exactly
    the ones in the checkpoint (fp16-exact for a shipped model), and ONNX Runtime fuses them
    itself when a session is created.

    Uses the TorchScript-based exporter (``dynamo=False``): it needs neither onnxscript
    nor a graph capture that the plain conv/BN/linear models here do not benefit from.
    """
    torch = _torch()
    try:
        import onnx
    except ImportError:
        raise FervidError("exporting to ONNX needs the onnx package: pip install 'fervid[train]'") from None

    model = model.float().eval()
    size = int(meta.get("input_size", FACE_SIZE))
    dummy = torch.zeros(2, 1, size, size)
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notes about the legacy exporter
        torch.onnx.export(model, (dummy,), buf, dynamo=False, opset_version=opset,
                          input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                          do_constant_folding=fold)
    proto = onnx.load_from_string(buf.getvalue())
    del proto.metadata_props[:]
    entry = proto.metadata_props.add()
    entry.key, entry.value = META_KEY, json.dumps(meta)
    proto.producer_name = "fervid"
    proto.doc_string = f"fervid {meta.get('arch', '?')} facial expression model: {', '.join(meta['classes'])}"
    return proto.SerializeToString()


def weights_to_fp16(data: bytes) -> bytes:
    """Store the graph's float weights as fp16, each behind a Cast back to fp32.

    Halves the file (the package ships its model, so size matters) while the arithmetic stays
    fp32: ONNX Runtime folds the Casts into fp32 constants when the session is created, so
    inference speed is unchanged. Tensors outside fp16's range, and tiny ones, stay fp32.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    proto = onnx.load_from_string(data)
    graph = proto.graph
    kept, casts = [], []
    for init in graph.initializer:
        arr = numpy_helper.to_array(init) if init.data_type == TensorProto.FLOAT else None
        if arr is None or arr.size < 64 or not np.isfinite(arr).all() or np.abs(arr).max() > 6e4:
            kept.append(init)
            continue
        half = numpy_helper.from_array(arr.astype(np.float16), f"{init.name}__fp16")
        kept.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=TensorProto.FLOAT,
                                      name=f"{init.name}__cast"))
    del graph.initializer[:]
    graph.initializer.extend(kept)
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


def check_parity(model, data: bytes, faces: np.ndarray | None = None) -> float:
    """Largest absolute softmax difference between PyTorch and ONNX Runtime on ``faces``
    (normalised ``[N, 1, 48, 48]``; a fixed pseudo-random batch when None)."""
    if faces is None:
        rng = np.random.default_rng(0)
        faces = rng.standard_normal((8, 1, FACE_SIZE, FACE_SIZE)).astype(np.float32)
    p_torch, p_onnx = _probabilities(model, data, faces)
    return float(np.abs(p_torch - p_onnx).max())


def _probabilities(model, data: bytes, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Softmax of the PyTorch model (fp32, eval) and of the ONNX graph ``data`` on the same faces."""
    torch = _torch()
    faces = np.ascontiguousarray(faces, dtype=np.float32)
    with torch.no_grad():
        p_torch = torch.softmax(model.float().eval()(torch.from_numpy(faces)), -1).numpy()
    sess = make_session(data, threads=1)
    return p_torch, softmax(sess.run([OUTPUT_NAME], {INPUT_NAME: faces})[0])


def export_in_memory(source: str | os.PathLike) -> tuple[bytes, dict[str, Any]]:
    """ONNX bytes and metadata of a ``.safetensors`` model or run folder (nothing written)."""
    _torch()
    from .models.loading import load_model

    model, meta = load_model(source)
    return onnx_bytes(model, meta), meta


def quantize_int8(data: bytes, calib: np.ndarray) -> bytes:
    """Statically quantise an fp32 fervid graph to int8 (QDQ: per-channel int8 weights, uint8
    activations whose ranges come from running ``calib``, normalised faces ``[N, 1, 48, 48]``).

    Static, not dynamic: ONNX Runtime's dynamic ConvInteger kernels ran about 10x slower than
    fp32 on 2 cores (bench/sections/classifier.py), while static QDQ convolutions run about 3x faster,
    which is what lets a model larger than vgg_s keep the 1,000 faces/s of recognition.
    The metadata of ``data`` is carried over unchanged.
    """
    import tempfile

    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        QuantFormat,
        QuantType,
        quant_pre_process,
        quantize_static,
    )

    calib = np.ascontiguousarray(calib, dtype=np.float32)
    if calib.ndim != 4 or len(calib) == 0:
        raise FervidError("int8 quantisation needs calibration faces [N, 1, H, W], N > 0")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.batches = [calib[i:i + 64] for i in range(0, len(calib), 64)]

        def get_next(self):
            return {INPUT_NAME: self.batches.pop()} if self.batches else None

    props = list(onnx.load_from_string(data).metadata_props)
    with tempfile.TemporaryDirectory(prefix="fervid-int8-") as tmp:
        src, pre, dst = (Path(tmp) / name for name in ("fp32.onnx", "pre.onnx", "int8.onnx"))
        src.write_bytes(data)
        quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True)
        proto = onnx.load(str(dst))
    del proto.metadata_props[:]
    for prop in props:
        proto.metadata_props.add().CopyFrom(prop)
    proto.producer_name = "fervid"
    return proto.SerializeToString()


def calibration_faces(source: str | os.PathLike, split: str = "Training", n: int = 512,
                      seed: int = 0) -> np.ndarray:
    """``n`` seeded faces of ``split`` in a FER-2013 source, equalized and normalised as every
    fervid model sees them: the activation ranges int8 quantisation fixes must be those of
    real, preprocessed faces (random pixels give ranges no face produces)."""
    faces = load_faces(source, split).images
    idx = np.sort(np.random.default_rng(seed).permutation(len(faces))[:n])
    return normalize(faces[idx])


def int8_agreement(model, data: bytes, faces: np.ndarray) -> tuple[float, float]:
    """(top-1 agreement, largest probability difference) of an int8 graph with its fp32
    PyTorch model on normalised ``faces``: quantisation moves probabilities by design, so the
    check that matters is how often the answer changes."""
    p_torch, p_onnx = _probabilities(model, data, faces)
    return float((p_onnx.argmax(1) == p_torch.argmax(1)).mean()), float(np.abs(p_torch - p_onnx).max())


#: The share of calibration faces on which an int8 export must give fp32 PyTorch's answer.
INT8_MIN_AGREEMENT = 0.9


def export_model(source: str | os.PathLike, out: str | os.PathLike | None = None, overwrite: bool = False,
                 opset: int = OPSET, fp16_weights: bool = False,
                 int8_calib: np.ndarray | None = None) -> dict[str, Any]:
    """Export ``source`` (``.safetensors`` or run folder) to ``out`` (``.onnx``; default: beside
    the source) plus ``out.json``. Returns the sidecar's content with ``path``, ``json``,
    ``bytes`` and ``parity`` (largest PyTorch/ONNX Runtime probability difference) added.
    ``fp16_weights`` stores weights at half size (see :func:`weights_to_fp16`); the parity check
    still applies, so a model that fp16 rounding would change is refused.
    ``int8_calib`` (normalised faces ``[N, 1, 48, 48]``) quantises the graph to int8 instead
    (see :func:`quantize_int8`): then ``agreement`` (top-1, int8 against fp32 PyTorch, on those
    faces) replaces the fp32 parity test, and a graph agreeing on under 90% is refused.
    """
    _torch()
    from .models.loading import load_model

    src = modelfile.resolve(source, torch_only=True)
    out = Path(out) if out else src.with_suffix(".onnx")
    if out.suffix.lower() != ".onnx":
        raise ModelFileError(f"{out}: the output name must end in .onnx")
    sidecar = out.with_suffix(".json")
    for p in (out, sidecar):
        if p.exists() and not overwrite:
            raise ModelFileError(f"{p}: already exists (use --overwrite to replace it)")
    if fp16_weights and int8_calib is not None:
        raise BadInputError("choose one of fp16 weights and int8 quantisation, not both")
    model, meta = load_model(src)
    rounding, agreement = None, None
    if fp16_weights:
        model, rounding = _round_to_fp16(model)
    data = onnx_bytes(model, meta, opset=opset, fold=not fp16_weights)
    if fp16_weights:
        data = weights_to_fp16(data)
    if int8_calib is not None:
        data = quantize_int8(data, int8_calib)
        agreement, diff = int8_agreement(model, data, int8_calib)
        if agreement < INT8_MIN_AGREEMENT:
            raise FervidError(f"{src}: the int8 model changes the answer on {1 - agreement:.0%} of "
                              f"{len(int8_calib)} calibration faces; ship the fp32 export instead")
    else:
        diff = check_parity(model, data)
        if diff > PARITY_TOLERANCE:
            raise FervidError(f"{src}: ONNX export disagrees with PyTorch (max probability difference {diff:.2e})")
    with atomic_path(out, overwrite=overwrite) as tmp:
        tmp.write_bytes(data)
    info = dict(meta)
    info["onnx"] = {"file": out.name, "opset": opset, "input": INPUT_NAME, "output": OUTPUT_NAME,
                    "input_shape": ["N", 1, meta.get("input_size", FACE_SIZE), meta.get("input_size", FACE_SIZE)],
                    "weights": "int8" if int8_calib is not None else "fp16" if fp16_weights else "fp32",
                    "source": src.name}
    if int8_calib is not None:
        info["onnx"]["quantization"] = {"method": "static QDQ, per-channel int8 weights, uint8 activations",
                                        "calibration_faces": len(int8_calib),
                                        "top1_agreement_with_fp32": round(agreement, 4)}
    write_text_atomic(sidecar, json.dumps(info, indent=2) + "\n", overwrite=overwrite)
    return {**info, "path": str(out), "json": str(sidecar), "parity": diff, "bytes": len(data),
            "fp16_rounding": rounding, "int8_agreement": agreement}


def _round_to_fp16(model):
    """The model with every float weight rounded to fp16, and how much that moved its
    probabilities on the parity batch: the exported file then holds exactly these weights,
    so parity is checked against what ships, and the rounding cost is reported apart."""
    import copy

    torch = _torch()
    rounded = copy.deepcopy(model).float().eval()
    with torch.no_grad():
        for t in list(rounded.parameters()) + list(rounded.buffers()):
            if t.is_floating_point():
                t.copy_(t.half().float())
    rng = np.random.default_rng(0)
    faces = torch.from_numpy(rng.standard_normal((8, 1, FACE_SIZE, FACE_SIZE)).astype(np.float32))
    with torch.no_grad():
        a = torch.softmax(model.float().eval()(faces), -1)
        b = torch.softmax(rounded(faces), -1)
    return rounded, float((a - b).abs().max())
