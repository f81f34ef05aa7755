"""ONNX export: the file's interface, its metadata, and agreement with PyTorch on real faces."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from fervid.cli import main  # noqa: E402
from fervid.errors import ModelFileError  # noqa: E402
from fervid.export import export_model  # noqa: E402
from fervid.preprocess import equalize_batch, normalize  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def test_onnx_interface_and_metadata(tiny_model, tiny_onnx):
    proto = onnx.load(str(tiny_onnx))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    (inp,), (out,) = proto.graph.input, proto.graph.output
    assert inp.name == "input" and out.name == "logits"
    dims = inp.type.tensor_type.shape.dim
    assert dims[0].dim_param and not dims[0].dim_value  # dynamic batch
    assert [d.dim_value for d in dims[1:]] == [1, 48, 48]
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    inside = json.loads({p.key: p.value for p in proto.metadata_props}["fervid"])
    sidecar = json.loads(tiny_onnx.with_suffix(".json").read_text())
    from fervid.training.checkpoint import read_meta

    meta = read_meta(tiny_model)
    for key in ("classes", "input_size", "mean", "std", "preprocess", "arch", "params", "mflops", "trained", "metrics"):
        assert inside[key] == meta[key] == sidecar[key], key
    assert sidecar["onnx"]["input"] == "input" and sidecar["onnx"]["opset"] >= 17


def test_onnx_runtime_matches_pytorch_on_real_faces(tiny_model, tiny_onnx, fer_faces):
    import onnxruntime as ort

    from fervid.training.checkpoint import load_model

    model, _ = load_model(tiny_model)
    x = normalize(equalize_batch(fer_faces[0]))
    with torch.no_grad():
        p_torch = torch.softmax(model(torch.from_numpy(x)), -1).numpy()
    sess = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"])
    for batch in (1, 7, len(x)):  # dynamic batch sizes all agree
        logits = np.concatenate([sess.run(["logits"], {"input": x[i:i + batch]})[0] for i in range(0, len(x), batch)])
        p_onnx = np.exp(logits - logits.max(1, keepdims=True))
        p_onnx /= p_onnx.sum(1, keepdims=True)
        assert np.abs(p_onnx - p_torch).max() < 1e-4
    assert model.training is False


def test_export_cli_from_run_folder_and_overwrite(tiny_model, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", str(tiny_model.parent), "-o", str(out)]) == 0
    assert out.is_file() and out.with_suffix(".json").is_file()
    assert "wrote" in capsys.readouterr().out
    before = out.stat().st_mtime_ns
    assert main(["export", str(tiny_model), "-o", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "already exists" in err and str(out) in err
    assert out.stat().st_mtime_ns == before
    assert main(["export", str(tiny_model), "-o", str(out), "--overwrite"]) == 0


@pytest.mark.parametrize("kind", ["text", "yunet", "missing"])
def test_export_refuses_files_that_are_not_fervid_models(kind, tmp_path, capsys):
    src = {"text": tmp_path / "notes.safetensors", "yunet": ROOT / "fervid" / "assets" / "yunet.onnx",
           "missing": tmp_path / "nope.safetensors"}[kind]
    if kind == "text":
        src.write_text("not a model\n")
    with pytest.raises(ModelFileError):
        export_model(src, tmp_path / "x.onnx")
    assert main(["export", str(src), "-o", str(tmp_path / "y.onnx")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(src) in err[0] and "Traceback" not in err[0]
    assert not (tmp_path / "y.onnx").exists()


def test_fp16_weights_halve_the_file_and_keep_fp32_answers(tiny_model, tiny_onnx, tmp_path, fer_faces):
    """--fp16-weights stores half-size weights behind Casts: the file shrinks, ONNX Runtime
    agrees with the fp16-rounded PyTorch model, and the answers stay within rounding of fp32."""
    import onnxruntime as ort

    out = tmp_path / "half.onnx"
    info = export_model(tiny_model, out, fp16_weights=True)
    assert info["parity"] < 1e-5 and info["onnx"]["weights"] == "fp16"
    assert info["fp16_rounding"] is not None and info["fp16_rounding"] < 1e-2
    assert out.stat().st_size < 0.6 * tiny_onnx.stat().st_size
    proto = onnx.load(str(out))
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)
    x = normalize(equalize_batch(fer_faces[0]))
    full = ort.InferenceSession(str(tiny_onnx), providers=["CPUExecutionProvider"]).run(["logits"], {"input": x})[0]
    half = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(["logits"], {"input": x})[0]
    assert half.dtype == np.float32 and half.shape == full.shape
    assert (half.argmax(1) == full.argmax(1)).mean() > 0.9
    assert np.abs(half - full).max() < 0.05


SHIPPED = ROOT / "fervid" / "assets" / "model.safetensors"
TEST_FER = ROOT / "tests" / "data" / "fer"


def test_int8_export_of_the_shipped_model_keeps_its_answers(tmp_path, fer_faces):
    """--int8 quantises (int8 weights and QDQ nodes in the graph, a file under half the fp32
    size) and the recognizer reading it gives the fp32 model's top answer on held-out faces."""
    from fervid.export import calibration_faces
    from fervid.recognition.recognize import Recognizer

    calib = calibration_faces(TEST_FER, "train", 512)
    assert calib.shape == (28, 1, 48, 48) and calib.dtype == np.float32
    out = tmp_path / "int8.onnx"
    info = export_model(SHIPPED, out, int8_calib=calib)
    assert info["onnx"]["weights"] == "int8" and info["int8_agreement"] >= 0.9
    assert info["onnx"]["quantization"]["calibration_faces"] == 28
    proto = onnx.load(str(out))
    ops = {n.op_type for n in proto.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
    assert any(i.data_type == onnx.TensorProto.INT8 for i in proto.graph.initializer)
    fp32 = tmp_path / "fp32.onnx"
    export_model(SHIPPED, fp32)
    assert out.stat().st_size < 0.5 * fp32.stat().st_size
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["onnx"]["weights"] == "int8" and sidecar["classes"] == info["classes"]
    faces = equalize_batch(fer_faces[0])  # the test split: not among the calibration faces
    p8 = Recognizer(out, detect=False, threads=1).probabilities(faces)
    p32 = Recognizer(fp32, detect=False, threads=1).probabilities(faces)
    assert p8.shape == p32.shape == (len(faces), 7)
    assert (p8.argmax(1) == p32.argmax(1)).mean() >= 0.9
    assert np.abs(p8 - p32).max() < 0.2


def test_int8_cli(tmp_path, capsys):
    out = tmp_path / "q.onnx"
    cases = [(["--int8"], "--calib"), (["--calib", str(TEST_FER)], "--int8"),
             (["--int8", "--fp16-weights", "--calib", str(TEST_FER), "--calib-split", "train"], "not both"),
             (["--int8", "--calib", str(tmp_path / "nowhere")], "nowhere")]
    for flags, says in cases:
        assert main(["export", str(SHIPPED), "-o", str(out), *flags]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and says in err[0], (flags, err)
        assert not out.exists()
    assert main(["export", str(SHIPPED), "-o", str(out), "--int8", "--calib", str(TEST_FER),
                 "--calib-split", "train", "--calib-faces", "16"]) == 0
    said = capsys.readouterr().out
    assert "int8 gives fp32's top answer on" in said and "of 16 calibration faces" in said
    assert json.loads(out.with_suffix(".json").read_text())["onnx"]["quantization"]["calibration_faces"] == 16
