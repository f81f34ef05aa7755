"""Looking inside a fervid model: its layers, first-layer filters, feature maps and Grad-CAM.

Recognition runs on ONNX Runtime, but these views need what an exported graph does not
keep: intermediate activations by module name and gradients. So this module works on the
PyTorch model (:func:`fervid.models.loading.load_model`) and is the library behind
``fervid visualize``; the pictures themselves are drawn by :mod:`fervid.analysis.interpret_figures`.

Nothing here knows a particular architecture. Layers are found by running one probe face
through the model with a forward hook on every module, so the same code serves every
registered model and any plug-in that follows the ``[N, 1, S, S] -> logits`` contract.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import BadInputError, ModelFileError
from ..models.loading import load_model_file
from ..preprocess import FACE_SIZE, MEAN, STD, crop_detections, crop_face, normalize, to_gray
from ..recognition.detect import FaceDetector
from ..recognition.recognize import ASSETS

#: The shipped model's PyTorch weights: Grad-CAM needs them (the shipped .onnx has no gradients).
DEFAULT_MODEL = ASSETS / "model.safetensors"


# --- the model ------------------------------------------------------------------------------

def load_insight_model(path: str | os.PathLike | None = None) -> tuple[nn.Module, dict[str, Any], Path]:
    """The PyTorch model, its metadata and the file it came from (None: the shipped model).

    An exported ``.onnx`` is refused up front with a line that says what to give instead,
    rather than the generic "not a safetensors file".
    """
    p = DEFAULT_MODEL if path is None else Path(path).expanduser()
    if p.suffix.lower() in (".onnx", ".json"):
        raise ModelFileError(f"{p}: an exported ONNX model keeps no gradients or layer names; give the "
                             ".safetensors model it was exported from (or its training run folder)")
    return load_model_file(p)


def class_index(meta: dict[str, Any], name: str) -> int:
    """Index of a class name in the model's classes, or a one-line error listing them."""
    classes = list(meta["classes"])
    key = name.strip().lower()
    if key not in classes:
        raise BadInputError(f"unknown class {name!r}; this model predicts {', '.join(classes)}")
    return classes.index(key)


def to_tensor(faces: np.ndarray, meta: dict[str, Any] | None = None) -> torch.Tensor:
    """Equalized uint8 faces [N, S, S] to the normalised float input [N, 1, S, S]."""
    meta = meta or {}
    return torch.from_numpy(normalize(faces, float(meta.get("mean", MEAN)), float(meta.get("std", STD))))


def _device(model: nn.Module) -> torch.device:
    """Where the model's weights are: inputs go there (a model moved to a GPU works too)."""
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@contextlib.contextmanager
def _not_inplace(model: nn.Module) -> Iterator[None]:
    """Turn off ``inplace`` activations for the duration.

    An in-place ReLU overwrites the tensor a hook just captured (a conv's output becomes
    its ReLU'd self) and shares its storage, which would both corrupt captured feature maps
    and make the layer probe see two layers as one. The flags are restored afterwards.
    """
    changed = [m for m in model.modules() if getattr(m, "inplace", False) is True]
    for m in changed:
        m.inplace = False
    try:
        yield
    finally:
        for m in changed:
            m.inplace = True


# --- layers ---------------------------------------------------------------------------------

@dataclass
class LayerInfo:
    """One named module as a probe face sees it (its last call, if it runs more than once)."""

    name: str
    kind: str  # class name, e.g. Conv2d, ReLU, BasicBlock
    shape: tuple[int, ...]  # output for one face, without the batch dimension
    calls: int
    #: The layer whose output this module merely passes on (a block returning its ReLU,
    #: a Sequential ending in it), or None. Such aliases are shown but never chosen by default.
    same_as: str | None = None

    @property
    def spatial(self) -> bool:
        return len(self.shape) == 3 and self.shape[1] * self.shape[2] > 1


def probe_layers(model: nn.Module, input_size: int = FACE_SIZE) -> list[LayerInfo]:
    """Every named module in the order its last call finished, with its output shape."""
    calls: list[tuple[str, nn.Module, torch.Tensor]] = []

    def hook(name: str):
        def fn(module: nn.Module, _inp: Any, out: Any) -> None:
            if isinstance(out, torch.Tensor):
                calls.append((name, module, out))
        return fn

    handles = [m.register_forward_hook(hook(n)) for n, m in model.named_modules() if n]
    was_training = model.training
    model.eval()
    try:
        with _not_inplace(model), torch.no_grad():
            model(torch.zeros(1, 1, input_size, input_size, device=_device(model)))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    count: dict[str, int] = {}
    for name, _, _ in calls:
        count[name] = count.get(name, 0) + 1
    # A run of consecutive calls returning the same tensor is one layer under several names;
    # its representative is the innermost module called once (a block, not its shared ReLU).
    groups: list[list[int]] = []
    for i, (_, _, out) in enumerate(calls):
        prev = calls[i - 1][2] if i else None
        same = prev is not None and (prev is out or (prev.data_ptr() == out.data_ptr() and prev.shape == out.shape))
        if same:
            groups[-1].append(i)
        else:
            groups.append([i])
    rep: dict[int, str] = {}
    for g in groups:
        names = [calls[i][0] for i in g]
        pick = next((n for n in names if count[n] == 1), names[0])
        for i in g:
            rep[i] = pick
    last: dict[str, int] = {name: i for i, (name, _, _) in enumerate(calls)}
    infos = []
    for name, i in sorted(last.items(), key=lambda kv: kv[1]):
        _, module, out = calls[i]
        infos.append(LayerInfo(name, type(module).__name__, tuple(out.shape[1:]), count[name],
                               None if rep[i] == name else rep[i]))
    return infos


def default_map_layers(layers: Sequence[LayerInfo]) -> list[str]:
    """The settled output of the last convolution of each stage (one per spatial size).

    "Settled" is the last layer at that size and width after the conv: its batch norm and
    activation (VGG), or the residual block's output (ResNet). These are what the next stage
    reads, and the usual choice for looking at what a network has computed so far.
    """
    picks: list[str] = []
    last_conv: dict[tuple[int, int], int] = {}
    for i, info in enumerate(layers):
        if info.kind == "Conv2d" and info.spatial:
            last_conv[info.shape[1:]] = i
    for hw, ci in sorted(last_conv.items(), key=lambda kv: kv[1]):
        width = layers[ci].shape[0]
        chosen = layers[ci].name
        for info in layers[ci + 1:]:
            if info.spatial and info.shape == (width, *hw) and info.same_as is None:
                chosen = info.name
        if chosen == layers[ci].name:
            # A conv pooled straight away (FastNet: conv -> pool -> BN) settles nowhere at its own
            # size; the map that size did settle into is the last activation or norm before it.
            settled = [info.name for info in layers[:ci] if info.spatial and info.shape[1:] == hw
                       and info.kind != "Conv2d" and info.same_as is None]
            chosen = settled[-1] if settled else chosen
        picks.append(chosen)
    return picks


def gradcam_layer(layers: Sequence[LayerInfo]) -> str:
    """Grad-CAM's usual target: the settled output of the model's last convolution."""
    picks = default_map_layers(layers)
    if not picks:
        raise BadInputError("this model has no convolution layer for Grad-CAM")
    return picks[-1]


def check_layers(layers: Sequence[LayerInfo], names: Sequence[str]) -> list[str]:
    """``names`` if every one is a layer with a spatial output, else a one-line error."""
    by_name = {info.name: info for info in layers}
    for n in names:
        if n not in by_name:
            raise BadInputError(f"unknown layer {n!r} (list the layers with `fervid visualize layers`)")
        if not by_name[n].spatial:
            raise BadInputError(f"layer {n!r} outputs {list(by_name[n].shape)}, not a feature map "
                                "(choose a layer with a [C, H, W] output)")
    return list(names)


@contextlib.contextmanager
def _capture(model: nn.Module, names: Sequence[str]) -> Iterator[dict[str, torch.Tensor]]:
    """Forward hooks storing the (last) output of each named module, graph attached."""
    modules = dict(model.named_modules())
    store: dict[str, torch.Tensor] = {}
    handles = []
    for n in names:
        def fn(_m: nn.Module, _i: Any, out: torch.Tensor, n: str = n) -> None:
            store[n] = out
        handles.append(modules[n].register_forward_hook(fn))
    try:
        with _not_inplace(model):
            yield store
    finally:
        for h in handles:
            h.remove()


def feature_maps(model: nn.Module, faces: np.ndarray, names: Sequence[str],
                 meta: dict[str, Any] | None = None) -> dict[str, np.ndarray]:
    """Activations [N, C, H, W] of the named layers for equalized uint8 faces."""
    model.eval()
    with _capture(model, names) as store, torch.no_grad():
        model(to_tensor(faces, meta).to(_device(model)))
        return {n: store[n].float().cpu().numpy().copy() for n in names}


def first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    """The first convolution the input meets (module order; every fervid model defines it first)."""
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return name, m
    raise BadInputError("this model has no convolution layer")


def first_filters(model: nn.Module) -> tuple[str, np.ndarray]:
    """The first conv's kernels [C_out, k, k] (averaged over input channels: a gray input has one)."""
    name, conv = first_conv(model)
    return name, conv.weight.detach().float().mean(dim=1).cpu().numpy()


# --- Grad-CAM -------------------------------------------------------------------------------

@dataclass
class CamResult:
    cams: np.ndarray  # float32 [N, S, S] in [0, 1], the input's spatial size
    probs: np.ndarray  # float32 [N, C] softmax over the model's classes
    targets: np.ndarray  # int64 [N] the class each map explains
    layer: str


CAM_METHODS = ("gradcam", "hirescam")


def grad_cam(model: nn.Module, faces: np.ndarray, target: int | Sequence[int] | None = None,
             layer: str | None = None, meta: dict[str, Any] | None = None, method: str = "gradcam") -> CamResult:
    """Grad-CAM (Selvaraju et al., 2017) for equalized uint8 faces [N, S, S].

    The map for class c is ReLU(sum_k a_k A_k), with A the activations of ``layer`` (default:
    :func:`gradcam_layer`) and a_k the spatial mean of d logit_c / d A_k; it is upsampled
    bilinearly to the input size and divided by its maximum, so 1 marks the region that
    most raises the class score and an all-zero map means nothing raised it. ``target``:
    None (each face's predicted class), one class index, or one index per face.

    ``method="hirescam"`` (Draelos & Carin, 2020) weights each activation by its own gradient
    instead of the channel's spatial mean. Behind global average pooling and one linear layer
    (resnet_*) the gradient is the same everywhere in a channel and both maps are identical
    (CAM); behind a flatten + linear head (vgg_*, baseline) each position has its own weights,
    their average can cancel, and Grad-CAM comes out empty for many faces (docs/visualize.md
    measures it on the shipped model) where HiResCAM still shows what raised the score.
    """
    model.eval()
    size = faces.shape[-2:]
    layer = layer or gradcam_layer(probe_layers(model, int(size[0])))
    x = to_tensor(faces, meta).to(_device(model)).requires_grad_(True)  # a graph even with frozen weights
    with _capture(model, [layer]) as store, torch.enable_grad():
        logits = model(x)
        acts = store[layer]
        if acts.ndim != 4:
            raise BadInputError(f"layer {layer!r} outputs {list(acts.shape[1:])}, not a feature map")
        if target is None:
            t = logits.argmax(1)
        else:
            t = torch.as_tensor(np.broadcast_to(np.asarray(target, dtype=np.int64), (len(faces),)).copy(),
                                device=logits.device)
        (grads,) = torch.autograd.grad(logits.gather(1, t[:, None]).sum(), acts)
    if method == "gradcam":
        weights = grads.mean(dim=(2, 3), keepdim=True)
    elif method == "hirescam":
        weights = grads
    else:
        raise BadInputError(f"unknown method {method!r}; use one of {', '.join(CAM_METHODS)}")
    cam = F.relu((weights * acts.detach()).sum(dim=1, keepdim=True))
    cam = F.interpolate(cam, size=tuple(size), mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).amax(1)[:, None, None]
    cam = torch.where(peak > 0, cam / peak.clamp_min(1e-12), torch.zeros_like(cam)).clamp_(0.0, 1.0)
    probs = F.softmax(logits.detach().float(), dim=1)
    return CamResult(cam.float().cpu().numpy(), probs.cpu().numpy(), t.cpu().numpy(), layer)


def deletion_drop(model: nn.Module, faces: np.ndarray, cams: np.ndarray, targets: np.ndarray,
                  fraction: float = 0.1, meta: dict[str, Any] | None = None, seed: int = 0) -> float:
    """Mean fall in the target class's probability when the ``fraction`` of pixels a map rates
    highest are blanked (set to the mean grey, 0 after normalisation).

    A faithfulness check for heat maps (the "deletion" test of Petsiuk et al., 2018): a map
    that points at what the model uses costs more probability than a random one of the same
    area. Ties (flat or empty maps) are broken at random, so an empty map scores as random.
    """
    rng = np.random.default_rng(seed)
    n, area = len(faces), int(np.prod(faces.shape[-2:]))
    k = max(1, int(round(fraction * area)))
    scores = cams.reshape(n, area) + rng.uniform(0, 1e-6, (n, area))
    top = np.argsort(-scores, axis=1)[:, :k]
    mask = np.zeros((n, area), bool)
    np.put_along_axis(mask, top, True, axis=1)
    dev = _device(model)
    x = to_tensor(faces, meta).to(dev)
    rows = torch.arange(n, device=dev)
    t = torch.as_tensor(np.asarray(targets, dtype=np.int64), device=dev)
    model.eval()
    with torch.no_grad():
        before = F.softmax(model(x), 1)[rows, t]
        after = F.softmax(model(x.masked_fill(torch.as_tensor(mask.reshape(x.shape), device=dev), 0.0)), 1)[rows, t]
    return float((before - after).mean())


# --- faces ----------------------------------------------------------------------------------

@dataclass
class FaceCrops:
    """The faces of one image as the classifier sees them, and where they were."""

    crops: np.ndarray  # uint8 [N, S, S], equalized
    boxes: list[tuple[int, int, int, int]]
    detected: bool  # False: the whole image was taken as one cropped face


def face_crops(image: np.ndarray, size: int = FACE_SIZE, detect: bool | None = None,
               detector: Any = None, min_confidence: float = 0.6, min_face: int = 20,
               **detector_kw: Any) -> FaceCrops:
    """The aligned faces of a BGR/gray image, largest first, exactly as recognition crops them.

    ``detect=None`` decides by size: an image of the model's input size (a FER-2013 crop)
    is one face already and is only equalized; anything else goes through YuNet and the
    same eye-levelled alignment as :class:`fervid.recognition.recognize.Recognizer`. ``detector``: a
    :class:`fervid.recognition.detect.FaceDetector` to reuse over many images (else one is made with
    ``min_confidence``, ``min_face`` and ``detector_kw``, e.g. ``detect_size``).
    """
    gray = to_gray(image)
    h, w = gray.shape[:2]
    if detect is None:
        detect = (h, w) != (size, size)
    if not detect:
        return FaceCrops(crop_face(gray, size)[None], [(0, 0, w, h)], False)
    if detector is None:
        detector = FaceDetector(min_confidence, min_face, **detector_kw)
    found = detector.detect(image)
    return FaceCrops(crop_detections(gray, found, size), [tuple(int(v) for v in d.box) for d in found], True)


# --- gallery --------------------------------------------------------------------------------

@dataclass
class GalleryRow:
    """Indices into the split for one true class, most confident first."""

    right: list[int]  # predicted correctly, by the probability of the prediction
    wrong: list[int]  # predicted as another class, by the probability of that wrong class


def gallery_picks(probs: np.ndarray, labels: np.ndarray, per_class: int) -> list[GalleryRow]:
    """Per true class, the ``per_class`` most confident right and wrong predictions.

    Confident mistakes are where a model is most misleading (and where FER-2013's own
    label noise shows); ties keep the split's order so a gallery is reproducible.
    """
    pred = probs.argmax(1)
    conf = probs[np.arange(len(probs)), pred]
    rows = []
    for c in range(probs.shape[1]):
        mine = np.flatnonzero(labels == c)
        right = mine[pred[mine] == c]
        wrong = mine[pred[mine] != c]
        right = right[np.argsort(-conf[right], kind="stable")][:per_class]
        wrong = wrong[np.argsort(-conf[wrong], kind="stable")][:per_class]
        rows.append(GalleryRow([int(i) for i in right], [int(i) for i in wrong]))
    return rows
