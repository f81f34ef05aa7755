"""``fervid visualize`` and the library behind it (:mod:`fervid.analysis.interpret`, :mod:`fervid.analysis.interpret_figures`).

Models here have random weights (seeded): Grad-CAM, layer discovery and the figures must
work for any checkpoint of any registered architecture, trained or not, and random models
are built in milliseconds.
"""
from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from fervid.analysis import interpret as insight  # noqa: E402
from fervid.analysis import interpret_figures as viz  # noqa: E402
from fervid.training.checkpoint import make_meta, save_model  # noqa: E402
from fervid.cli import main  # noqa: E402
from fervid.data import FER_CLASSES, load_faces  # noqa: E402
from fervid.errors import BadInputError, ModelFileError  # noqa: E402
from fervid.models import create_model, list_models  # noqa: E402
from fervid.preprocess import equalize_batch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FER = ROOT / "tests" / "data" / "fer"
SAMPLE = ROOT / "fervid" / "assets" / "sample.jpg"
META = make_meta("vgg_tiny", FER_CLASSES)


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def _random_model(arch: str, seed: int = 0) -> torch.nn.Module:
    """A model with random weights, batch-norm statistics included (the zero-init of ResNet's
    last BN per block would otherwise make every block an identity)."""
    torch.manual_seed(seed)
    model = create_model(arch, num_classes=len(FER_CLASSES))
    for m in model.modules():
        if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    """Four committed FER test faces, equalized, uint8 [4, 48, 48]."""
    paths = sorted(FER.glob("test/*/*.jpg"))[::10][:4]
    return equalize_batch(np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in paths]))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> Path:
    """A random vgg_tiny saved as a real fervid model file."""
    path = tmp_path_factory.mktemp("viz_model") / "tiny.safetensors"
    save_model(path, _random_model("vgg_tiny"), META)
    return path


def _png(path: Path) -> np.ndarray:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    img = cv2.imread(str(path))
    assert img is not None, f"{path} is not a readable image"
    return img


def _size(path: Path) -> tuple[int, int]:
    h, w = _png(path).shape[:2]
    return w, h


# --- Grad-CAM -------------------------------------------------------------------------------

@pytest.mark.parametrize("method", insight.CAM_METHODS)
@pytest.mark.parametrize("arch", list_models())
def test_gradcam_works_for_every_architecture(arch, method, faces):
    model = _random_model(arch)
    x = insight.to_tensor(faces)
    with torch.no_grad():
        before = model(x)
    flags = [m.inplace for m in model.modules() if hasattr(m, "inplace")]
    a = insight.grad_cam(model, faces, target=0, method=method)
    b = insight.grad_cam(model, faces, target=3, method=method)
    pred = insight.grad_cam(model, faces, method=method)
    for r in (a, b, pred):
        assert r.cams.shape == faces.shape  # the input's spatial size, one map per face
        assert np.isfinite(r.cams).all()
        assert r.cams.min() >= 0.0 and r.cams.max() <= 1.0
        peaks = r.cams.reshape(len(faces), -1).max(1)
        assert all(math.isclose(p, 1.0, abs_tol=1e-5) or p == 0.0 for p in peaks), peaks  # normalised per face
        assert peaks.max() > 0
        np.testing.assert_allclose(r.probs.sum(1), 1.0, atol=1e-5)
    assert np.abs(a.cams - b.cams).mean() > 1e-3, "the map does not depend on the class it explains"
    np.testing.assert_array_equal(pred.targets, before.argmax(1).numpy())
    np.testing.assert_array_equal(a.targets, np.zeros(len(faces)))
    # The model is left as it was: same outputs, in-place activations switched back on.
    with torch.no_grad():
        torch.testing.assert_close(model(x), before)
    assert [m.inplace for m in model.modules() if hasattr(m, "inplace")] == flags


def test_gradcam_equals_cam_where_the_head_is_pooling_and_linear(faces):
    """With global average pooling and one linear layer after the target layer, Grad-CAM's
    channel weights are the linear weights / (h*w), so it must equal CAM (Zhou et al. 2016),
    computed here from the weights without any gradient; so must HiResCAM, whose gradients
    are then the same at every position of a channel."""
    model = _random_model("resnet_s", seed=3)
    layer = insight.gradcam_layer(insight.probe_layers(model))
    assert layer == "layers.7"  # the output of the last residual block, which the pooling reads
    target = 4
    acts = insight.feature_maps(model, faces, [layer])[layer]  # [N, C, 3, 3]
    weights = model.head[-1].weight.detach().numpy()[target]
    for method in insight.CAM_METHODS:
        got = insight.grad_cam(model, faces, target=target, layer=layer, method=method)
        for i in range(len(faces)):
            cam = np.maximum(np.tensordot(weights, acts[i], axes=(0, 0)), 0)
            cam = cv2.resize(cam.astype(np.float32), (48, 48), interpolation=cv2.INTER_LINEAR)
            cam = cam / cam.max() if cam.max() > 0 else cam
            np.testing.assert_allclose(got.cams[i], cam, atol=1e-4)


def test_hirescam_differs_where_the_head_keeps_positions(faces):
    """Behind a flatten + linear head the two methods are different maps (else the option is moot)."""
    model = _random_model("vgg_tiny", seed=1)
    a = insight.grad_cam(model, faces, target=2, method="gradcam").cams
    b = insight.grad_cam(model, faces, target=2, method="hirescam").cams
    assert np.abs(a - b).mean() > 1e-3
    with pytest.raises(BadInputError, match="unknown method"):
        insight.grad_cam(model, faces, method="nope")


def test_deletion_drop_rewards_the_pixels_the_model_uses():
    """A toy model whose class 0 reads only the left half of the face: blanking the left half
    costs class 0 probability, blanking the right half gains it, a random map is in between."""

    class Halves(torch.nn.Module):
        def forward(self, x):
            return torch.stack([x[..., :24].mean((1, 2, 3)), x[..., 24:].mean((1, 2, 3))], 1) * 3

    faces = np.full((5, 48, 48), 230, np.uint8)
    left = np.zeros((5, 48, 48), np.float32)
    left[..., :24] = 1.0
    target = np.zeros(5, np.int64)
    d_left = insight.deletion_drop(Halves(), faces, left, target, fraction=0.25)
    d_right = insight.deletion_drop(Halves(), faces, 1.0 - left, target, fraction=0.25)
    d_rand = insight.deletion_drop(Halves(), faces, np.random.default_rng(0).uniform(size=left.shape), target, 0.25)
    assert d_left > d_rand > d_right and d_left > 0 > d_right


def test_cam_targets():
    pred = np.array([3, 0])
    np.testing.assert_array_equal(viz.cam_targets(pred, 7), [[3], [0]])
    # requested classes follow the prediction; one equal to it is not repeated (empty cell: -1)
    np.testing.assert_array_equal(viz.cam_targets(pred, 7, [3, 5, 3]), [[3, 5, -1], [0, 3, 5]])
    np.testing.assert_array_equal(viz.cam_targets(pred, 4, all_classes=True), [[0, 1, 2, 3]] * 2)


# --- layers and feature maps ----------------------------------------------------------------

@pytest.mark.parametrize("arch", list_models())
def test_default_layers_are_the_settled_output_of_each_stage(arch):
    model = _random_model(arch)
    infos = insight.probe_layers(model)
    by_name = {i.name: i for i in infos}
    picks = insight.default_map_layers(infos)
    conv_sizes = {i.shape[1:] for i in infos if i.kind == "Conv2d"}
    assert [by_name[p].shape[1:] for p in picks] == sorted(conv_sizes, reverse=True)  # one per stage, in order
    for p in picks:
        assert by_name[p].kind != "Conv2d" and by_name[p].same_as is None
        assert by_name[p].shape[0] == max(i.shape[0] for i in infos  # the stage's width, not a conv about to pool
                                           if i.kind != "Conv2d" and i.spatial and i.shape[1:] == by_name[p].shape[1:])
    assert insight.gradcam_layer(infos) == picks[-1]


def test_feature_maps_are_the_layer_outputs(faces):
    """The captured maps equal running the network up to that layer, including a conv whose
    output an in-place ReLU would otherwise have overwritten."""
    model = _random_model("vgg_tiny")
    maps = insight.feature_maps(model, faces, ["features.0", "features.2", "features.9"])
    x = insight.to_tensor(faces)
    with torch.no_grad():
        conv = model.features[0](x).numpy()
        np.testing.assert_allclose(maps["features.0"], conv, atol=1e-5)
        assert (maps["features.0"] < 0).any()  # not ReLU'd in place
        np.testing.assert_allclose(maps["features.9"], model.features[:10](x).numpy(), atol=1e-5)
    assert maps["features.2"].shape == (len(faces), 16, 48, 48)
    base = _random_model("baseline")  # its convs feed an in-place ReLU directly
    maps = insight.feature_maps(base, faces, ["features.0", "features.1"])
    with torch.no_grad():
        conv = base.features[0](x).numpy()
    np.testing.assert_allclose(maps["features.0"], conv, atol=1e-5)
    assert (maps["features.0"] < 0).any()
    np.testing.assert_allclose(maps["features.1"], np.maximum(conv, 0), atol=1e-5)


def test_check_layers_rejects_unknown_and_flat_layers():
    infos = insight.probe_layers(_random_model("vgg_tiny"))
    assert insight.check_layers(infos, ["features.2"]) == ["features.2"]
    with pytest.raises(BadInputError, match="unknown layer 'nope'"):
        insight.check_layers(infos, ["nope"])
    with pytest.raises(BadInputError, match="not a feature map"):
        insight.check_layers(infos, ["classifier.0"])


def test_face_crops_match_recognition(faces):
    """A photo is cropped exactly as ``fervid predict`` crops it; a 48x48 crop is only equalized."""
    from fervid.images import read_image
    from fervid.recognition.recognize import Recognizer

    image = read_image(SAMPLE)
    got = insight.face_crops(image)
    rec = Recognizer(threads=1)
    want = rec.crops(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY), rec.detect(image))
    assert got.detected and len(got.crops) == 1
    np.testing.assert_array_equal(got.crops, want)
    raw = cv2.imread(str(sorted(FER.glob("test/*/*.jpg"))[0]), cv2.IMREAD_GRAYSCALE)
    crop = insight.face_crops(raw)
    assert not crop.detected
    np.testing.assert_array_equal(crop.crops[0], cv2.equalizeHist(raw))


# --- gallery picks --------------------------------------------------------------------------

def test_gallery_picks_most_confident_right_and_wrong():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(3), size=200)
    labels = rng.integers(0, 3, size=200)
    rows = insight.gallery_picks(probs, labels, per_class=4)
    pred, conf = probs.argmax(1), probs.max(1)
    assert len(rows) == 3
    for c, row in enumerate(rows):
        for picks, right in ((row.right, True), (row.wrong, False)):
            mine = np.flatnonzero((labels == c) & ((pred == c) == right))
            assert len(picks) == min(4, len(mine))
            assert all(labels[i] == c and (pred[i] == c) == right for i in picks)
            assert list(conf[picks]) == sorted(conf[picks], reverse=True)
            rest = np.setdiff1d(mine, picks)
            assert not len(rest) or conf[rest].max() <= conf[picks].min()


# --- figures --------------------------------------------------------------------------------

def test_figures_have_the_size_of_their_layout(tmp_path, faces):
    model = _random_model("vgg_tiny")
    path = viz.filters_figure(model, META, tmp_path / "filters.png")
    n = model.features[0].out_channels  # 16 for vgg_tiny
    cols = min(n, viz.FILTER_COLS)
    assert _size(path) == (cols * viz.FILTER_CELL, viz.TITLE_H + math.ceil(n / cols) * viz.FILTER_CELL)

    drawn = viz.maps_figure(model, META, faces[0], tmp_path / "maps.png", channels=5)
    assert drawn == insight.default_map_layers(insight.probe_layers(model))
    assert _size(tmp_path / "maps.png") == (6 * viz.MAP_CELL,
                                            viz.TITLE_H + len(drawn) * (viz.MAP_LABEL_H + viz.MAP_CELL))
    viz.maps_figure(model, META, faces[0], tmp_path / "maps2.png", layers=["features.0"], channels=40)
    assert _size(tmp_path / "maps2.png") == (41 * viz.MAP_CELL, viz.TITLE_H + viz.MAP_LABEL_H + viz.MAP_CELL)

    panels = viz.gradcam_figure(model, META, faces[:2], tmp_path / "cam.png", all_classes=True)
    assert panels.cams.shape == (2, 7, 48, 48)
    assert _size(tmp_path / "cam.png") == (8 * viz.CAM_CELL, viz.TITLE_H + 2 * (viz.CAM_CELL + viz.CAM_CAPTION_H))
    # The first cell of each row is the face exactly as the model saw it, each pixel a 3x3 block.
    img = _png(tmp_path / "cam.png")
    inner = viz.CAM_CELL - 2 * viz.PAD
    for i in range(2):
        y = viz.TITLE_H + i * (viz.CAM_CELL + viz.CAM_CAPTION_H) + viz.PAD
        cell = img[y:y + inner, viz.PAD:viz.PAD + inner]
        want = np.kron(faces[i], np.ones((3, 3), np.uint8))
        for ch in range(3):
            np.testing.assert_array_equal(cell[..., ch], want)
        heat = img[y:y + inner, viz.CAM_CELL + viz.PAD:viz.CAM_CELL + viz.PAD + inner].astype(int)
        assert np.abs(heat[..., 0] - heat[..., 2]).mean() > 20  # the heat-map cell is in colour

    data = load_faces(FER, "test", use_cache=False)
    stats = viz.gallery_figure(model, META, data, tmp_path / "gallery.png", per_class=3)
    assert _size(tmp_path / "gallery.png") == (
        viz.GAL_LABEL_W + 2 * 3 * viz.GAL_CELL + viz.GAL_GAP,
        viz.TITLE_H + viz.GAL_HEADER_H + len(FER_CLASSES) * (viz.GAL_CELL + viz.GAL_CAPTION_H))
    assert stats["n"] == len(data) and stats["right"] + stats["wrong"] > 0
    with pytest.raises(BadInputError, match="already exists"):  # no silent overwrite
        viz.filters_figure(model, META, tmp_path / "filters.png", overwrite=False)


# --- CLI ------------------------------------------------------------------------------------

def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main(["visualize", *map(str, argv)])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return rc, out, err


def _one_line_error(rc: int, err: str, *words: str) -> None:
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("fervid visualize: error: "), err
    for w in words:
        assert w in lines[0], lines[0]


def test_cli_views_write_pngs_and_refuse_to_overwrite(tmp_path, capsys, model_file):
    face = sorted(FER.glob("test/happy/*.jpg"))[0]
    rc, out, _ = _cli(capsys, "layers", "--model", model_file)
    assert rc == 0 and "features.23" in out and "Grad-CAM" in out and "default for maps" in out
    for view, args, dest in (("filters", [], tmp_path / "f.png"), ("maps", [face], tmp_path / "m.png")):
        rc, out, _ = _cli(capsys, view, *args, "--model", model_file, "-o", dest)
        assert rc == 0 and dest.is_file(), out
        rc, _, err = _cli(capsys, view, *args, "--model", model_file, "-o", dest)
        _one_line_error(rc, err, str(dest), "already exists")
        rc, _, _ = _cli(capsys, view, *args, "--model", model_file, "-o", dest, "--overwrite")
        assert rc == 0
    rc, out, _ = _cli(capsys, "gradcam", face, SAMPLE, "--model", model_file, "--target", "sad", "-o", tmp_path / "g")
    assert rc == 0
    row_h = viz.TITLE_H + viz.CAM_CELL + viz.CAM_CAPTION_H
    assert _size(tmp_path / "g" / f"{face.stem}.png") == (3 * viz.CAM_CELL, row_h)  # face | predicted | sad
    assert (tmp_path / "g" / "sample.png").is_file() and "2 faces in 2 PNGs" in out
    rc, out, _ = _cli(capsys, "gradcam", face, "--model", model_file, "--all-classes", "--method", "hirescam",
                      "-o", tmp_path / "h")
    assert rc == 0
    assert _size(tmp_path / "h" / f"{face.stem}.png") == (8 * viz.CAM_CELL, row_h)
    rc, out, _ = _cli(capsys, "gallery", "--data", FER, "--split", "test", "--model", model_file,
                      "--per-class", "2", "-o", tmp_path / "gal.png", "--device", "cpu")
    assert rc == 0 and (tmp_path / "gal.png").is_file() and "accuracy" in out


def test_cli_bad_inputs_are_one_line_errors(tmp_path, capsys, model_file):
    face = sorted(FER.glob("test/happy/*.jpg"))[0]
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    rc, _, err = _cli(capsys, "maps", text, "--model", model_file, "-o", tmp_path / "m.png")
    _one_line_error(rc, err, str(text), "not an image")

    blank = tmp_path / "blank.png"
    cv2.imwrite(str(blank), np.full((200, 200, 3), 128, np.uint8))
    rc, _, err = _cli(capsys, "maps", blank, "--model", model_file, "-o", tmp_path / "m.png")
    _one_line_error(rc, err, str(blank), "no face found")

    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"this is not a model")
    rc, _, err = _cli(capsys, "filters", "--model", bogus, "-o", tmp_path / "f.png")
    _one_line_error(rc, err, str(bogus), "not a fervid model")
    onnx = tmp_path / "model.onnx"
    onnx.write_bytes(b"\x08\x07")
    rc, _, err = _cli(capsys, "gradcam", face, "--model", onnx, "-o", tmp_path / "g")
    _one_line_error(rc, err, str(onnx), ".safetensors")

    rc, _, err = _cli(capsys, "maps", face, "--model", model_file, "--layers", "features.2,nope",
                      "-o", tmp_path / "m.png")
    _one_line_error(rc, err, "unknown layer 'nope'")
    rc, _, err = _cli(capsys, "gradcam", face, "--model", model_file, "--layer", "nope", "-o", tmp_path / "g")
    _one_line_error(rc, err, "unknown layer 'nope'")
    rc, _, err = _cli(capsys, "gradcam", face, "--model", model_file, "--target", "hapy", "-o", tmp_path / "g")
    _one_line_error(rc, err, "unknown class 'hapy'", "happy")
    assert not (tmp_path / "m.png").exists() and not (tmp_path / "g").exists()


def test_cli_gradcam_batch_goes_on_past_a_bad_file(tmp_path, capsys, model_file):
    good = sorted(FER.glob("test/happy/*.jpg"))[:2]
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    rc, out, err = _cli(capsys, "gradcam", good[0], bad, good[1], "--model", model_file, "-o", tmp_path / "g")
    assert rc == 2
    assert err.count("error:") == 1 and str(bad) in err
    assert "2 faces in 2 PNGs" in out and "1 failed" in out
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == sorted(f"{p.stem}.png" for p in good)


def test_insight_model_loading_errors(tmp_path):
    with pytest.raises(ModelFileError, match="no such model file"):
        insight.load_insight_model(tmp_path / "missing.safetensors")
    model, meta, path = insight.load_insight_model(None)  # the shipped model
    assert path.name == "model.safetensors" and meta["classes"] and not model.training
