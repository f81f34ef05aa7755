"""Pictures of what a model has learnt: filter, feature-map, Grad-CAM and gallery grids as PNGs.

The numbers come from :mod:`fervid.analysis.interpret`; this module only draws. Every figure is a grid
of fixed-size pixel cells: images are painted straight into a pixel array (colour maps from
matplotlib, resizing by OpenCV) and only the text is set by matplotlib's Agg renderer, with
no ``pyplot`` and no automatic layout. So an image's pixel size follows from its layout
alone (the constants below and the number of rows and columns), a 48x48 face appears
pixel for pixel as the model saw it, and a figure of dozens of cells draws in a fraction of
the time one matplotlib axes per cell takes.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from ..errors import BadInputError
from ..files import atomic_path

DPI = 100
#: Band at the top of every figure for its title and subtitle, in pixels.
TITLE_H = 40
#: White border inside every cell, in pixels (keeps neighbouring images apart).
PAD = 2

# Cells of 52 and 148 px leave 48 and 144 px images: 48x48 faces, their 24, 12 and 6 px
# maps and 3x3 kernels are drawn at whole multiples, so no pixel is wider than its neighbour.
FILTER_CELL, FILTER_COLS = 52, 8
MAP_CELL, MAP_LABEL_H = 52, 18
CAM_CELL, CAM_CAPTION_H = 148, 34
GAL_CELL, GAL_CAPTION_H, GAL_LABEL_W, GAL_GAP, GAL_HEADER_H = 64, 16, 88, 16, 22


def colorize(values: np.ndarray, cmap: str, vmin: float, vmax: float) -> np.ndarray:
    """A 2-D array through a matplotlib colour map: uint8 RGB [H, W, 3]."""
    import matplotlib

    span = vmax - vmin if vmax > vmin else 1.0
    norm = np.clip((np.asarray(values, np.float64) - vmin) / span, 0.0, 1.0)
    return (matplotlib.colormaps[cmap](norm)[..., :3] * 255 + 0.5).astype(np.uint8)


def heat_overlay(face: np.ndarray, cam: np.ndarray, size: int, alpha: float = 0.5) -> np.ndarray:
    """RGB [size, size, 3]: the face (nearest, so its pixels stay visible) under a jet heat map
    (bilinear, as the map is a smooth upsampling anyway) at opacity ``alpha``."""
    import cv2

    gray = cv2.resize(face, (size, size), interpolation=cv2.INTER_NEAREST)
    heat = colorize(cv2.resize(cam.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR), "jet", 0, 1)
    mixed = (1 - alpha) * np.repeat(gray[..., None], 3, axis=2) + alpha * heat
    return (mixed + 0.5).astype(np.uint8)


class _Canvas:
    """A white pixel array with text on top, addressed in pixels from the top-left corner."""

    def __init__(self, width: int, height: int, title: str = "", subtitle: str = ""):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.w, self.h = int(width), int(height)
        self.pixels = np.full((self.h, self.w, 3), 255, np.uint8)
        # +0.01 px: Agg truncates figsize * dpi, and 4.47 * 100 is 446.99999999999994.
        # The figure holds the text only, on a transparent ground laid over the pixels at the end.
        self.fig = Figure(figsize=((self.w + 0.01) / DPI, (self.h + 0.01) / DPI), dpi=DPI, facecolor="none")
        FigureCanvasAgg(self.fig)
        if title:
            self.text(self.w / 2, TITLE_H / 2 - (7 if subtitle else 0), title, ha="center", va="center",
                      fontsize=10, weight="bold")
        if subtitle:
            self.text(self.w / 2, TITLE_H / 2 + 9, subtitle, ha="center", va="center", fontsize=8, color="dimgray")

    def paste(self, x: int, y: int, size: int, rgb: np.ndarray, smooth: bool = False) -> None:
        """An image filling a square cell (inside its PAD border) at pixel (x, y)."""
        import cv2

        inner = size - 2 * PAD
        if rgb.shape[:2] != (inner, inner):
            rgb = cv2.resize(rgb, (inner, inner), interpolation=cv2.INTER_LINEAR if smooth else cv2.INTER_NEAREST)
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[..., None], 3, axis=2)
        self.pixels[y + PAD:y + PAD + inner, x + PAD:x + PAD + inner] = rgb

    def image(self, x: int, y: int, size: int, values: np.ndarray, cmap: str, vmin: float, vmax: float) -> None:
        """A 2-D array through a colour map, pixels enlarged as whole blocks."""
        import cv2

        inner = size - 2 * PAD
        big = cv2.resize(np.asarray(values, np.float32), (inner, inner), interpolation=cv2.INTER_NEAREST)
        self.paste(x, y, size, colorize(big, cmap, vmin, vmax))

    def face(self, x: int, y: int, size: int, face: np.ndarray, smooth: bool = False) -> None:
        """A gray face; ``smooth`` where the cell is not a whole multiple of the face's size."""
        self.paste(x, y, size, face, smooth)

    def text(self, x: float, y: float, s: str, **kw) -> None:
        self.fig.text(x / self.w, 1 - y / self.h, s, **kw)

    def save(self, path: str | os.PathLike, overwrite: bool) -> Path:
        """Write an RGB PNG (no alpha: figures are opaque, and RGBA is a third larger)."""
        import cv2

        self.fig.canvas.draw()
        text = np.asarray(self.fig.canvas.buffer_rgba()).astype(np.float32)
        a = text[..., 3:] / 255.0
        rgb = (self.pixels * (1.0 - a) + text[..., :3] * a + 0.5).clip(0, 255).astype(np.uint8)
        path = Path(path)
        with atomic_path(path, overwrite=overwrite) as tmp:
            if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 6]):
                raise BadInputError(f"{path}: could not write this PNG")
        return path


def _short(text: str, n: int, keep_end: bool = True) -> str:
    """``text`` cut to ``n`` characters: a path keeps its end (the file name), prose its start."""
    if len(text) <= n:
        return text
    return "..." + text[-(n - 3):] if keep_end else text[:n - 3] + "..."


# --- filters --------------------------------------------------------------------------------

def filters_size(n_filters: int) -> tuple[int, int]:
    """(width, height) in pixels of :func:`render_filters` for ``n_filters`` kernels."""
    cols = min(n_filters, FILTER_COLS)
    rows = -(-n_filters // cols)
    return cols * FILTER_CELL, TITLE_H + rows * FILTER_CELL


def render_filters(kernels: np.ndarray, path: str | os.PathLike, title: str = "", subtitle: str = "",
                   overwrite: bool = True) -> Path:
    """First-layer kernels [C, k, k] on one shared diverging scale (red positive, blue negative).

    One scale for all, rather than one per kernel, so a kernel that learnt little looks faint
    instead of being stretched into a confident-looking pattern.
    """
    n = len(kernels)
    w, h = filters_size(n)
    cols = min(n, FILTER_COLS)
    lim = float(np.abs(kernels).max()) or 1.0
    c = _Canvas(w, h, title or f"{n} first-layer filters",
                subtitle or f"red positive, blue negative, one scale (largest |w| {lim:.2f})")
    for i, k in enumerate(kernels):
        r, q = divmod(i, cols)
        c.image(q * FILTER_CELL, TITLE_H + r * FILTER_CELL, FILTER_CELL, k, cmap="RdBu_r", vmin=-lim, vmax=lim)
    return c.save(path, overwrite)


# --- feature maps ---------------------------------------------------------------------------

def maps_size(n_layers: int, channels: int) -> tuple[int, int]:
    """(width, height) of :func:`render_maps`: a row per layer, the face then ``channels`` maps."""
    return (1 + channels) * MAP_CELL, TITLE_H + n_layers * (MAP_LABEL_H + MAP_CELL)


def top_channels(maps: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` channels [C, H, W] with the highest mean activation, highest first."""
    return np.argsort(-maps.reshape(len(maps), -1).mean(1), kind="stable")[:k]


def render_maps(face: np.ndarray, layers: dict[str, np.ndarray], path: str | os.PathLike,
                channels: int = 16, labels: dict[str, str] | None = None, title: str = "",
                overwrite: bool = True) -> Path:
    """Each layer's ``channels`` most active maps [C, H, W] for one face, one row per layer.

    The most active channels are what the layer mostly passes on for this face; each map
    gets its own colour range (viridis) since channels differ in scale by orders of magnitude.
    """
    w, h = maps_size(len(layers), channels)
    c = _Canvas(w, h, title)
    for r, (name, maps) in enumerate(layers.items()):
        y = TITLE_H + r * (MAP_LABEL_H + MAP_CELL)
        label = (labels or {}).get(name, f"{name}  {'x'.join(map(str, maps.shape))}")
        c.text(4, y + MAP_LABEL_H / 2 + 1, label, ha="left", va="center", fontsize=8)
        y += MAP_LABEL_H
        c.face(0, y, MAP_CELL, face)
        for q, ch in enumerate(top_channels(maps, channels)):
            m = maps[ch]
            lo, hi = float(m.min()), float(m.max())
            c.image((1 + q) * MAP_CELL, y, MAP_CELL, m, cmap="viridis", vmin=lo, vmax=hi if hi > lo else lo + 1)
            c.text((1 + q) * MAP_CELL + PAD + 2, y + PAD + 1, str(int(ch)), ha="left", va="top", fontsize=6,
                   color="white")
    return c.save(path, overwrite)


# --- Grad-CAM -------------------------------------------------------------------------------

def gradcam_size(n_faces: int, n_targets: int) -> tuple[int, int]:
    """(width, height) of :func:`render_gradcam`: a row per face, the face then one map per target."""
    return (1 + n_targets) * CAM_CELL, TITLE_H + n_faces * (CAM_CELL + CAM_CAPTION_H)


def render_gradcam(faces: np.ndarray, cams: np.ndarray, probs: np.ndarray, targets: np.ndarray,
                   classes: Sequence[str], path: str | os.PathLike, title: str = "", subtitle: str = "",
                   overwrite: bool = True, alpha: float = 0.5) -> Path:
    """Side-by-side panels: the aligned face as the model saw it | Grad-CAM over it, per target.

    ``faces`` uint8 [N, S, S]; ``cams`` [N, T, S, S] in [0, 1]; ``probs`` [N, C]; ``targets``
    [N, T] class indices (-1: an empty cell). Captions give the class, its probability and whether it is the
    model's prediction, so a map is never read without the confidence behind it.
    """
    n, t = cams.shape[:2]
    w, h = gradcam_size(n, t)
    c = _Canvas(w, h, _short(title, max(24, w // 8)), _short(subtitle, max(30, w // 6), keep_end=False))
    for i in range(n):
        y = TITLE_H + i * (CAM_CELL + CAM_CAPTION_H)
        pred = int(probs[i].argmax())
        c.face(0, y, CAM_CELL, faces[i])
        c.text(CAM_CELL / 2, y + CAM_CELL + 2, f"face {i + 1}" if n > 1 else "face", ha="center", va="top",
               fontsize=9)
        c.text(CAM_CELL / 2, y + CAM_CELL + 17, f"aligned {faces.shape[-1]}x{faces.shape[-2]}", ha="center",
               va="top", fontsize=7, color="dimgray")
        for j in range(t):
            x = (1 + j) * CAM_CELL
            k = int(targets[i, j])
            if k < 0:  # nothing asked for here (a requested class that is this face's prediction)
                continue
            c.paste(x, y, CAM_CELL, heat_overlay(faces[i], cams[i, j], CAM_CELL - 2 * PAD, alpha))
            c.text(x + CAM_CELL / 2, y + CAM_CELL + 2, f"{classes[k]} {probs[i, k]:.2f}", ha="center",
                   va="top", fontsize=9, weight="bold" if k == pred else "normal")
            note = ["predicted"] if k == pred else []
            if not cams[i, j].max() > 0:  # said in words: an all-blue panel looks like a rendering fault
                note.append("empty map")
            if note:
                c.text(x + CAM_CELL / 2, y + CAM_CELL + 17, ", ".join(note), ha="center", va="top", fontsize=7,
                       color="dimgray" if cams[i, j].max() > 0 else "firebrick")
    return c.save(path, overwrite)


# --- gallery --------------------------------------------------------------------------------

def gallery_size(n_classes: int, per_class: int) -> tuple[int, int]:
    """(width, height) of :func:`render_gallery`: a row per true class, right | wrong columns."""
    return (GAL_LABEL_W + 2 * per_class * GAL_CELL + GAL_GAP,
            TITLE_H + GAL_HEADER_H + n_classes * (GAL_CELL + GAL_CAPTION_H))


def render_gallery(faces: np.ndarray, labels: np.ndarray, probs: np.ndarray, rows: Sequence,
                   classes: Sequence[str], path: str | os.PathLike, per_class: int, title: str = "",
                   subtitle: str = "", overwrite: bool = True) -> Path:
    """Rows = true classes; left the most confident right predictions, right the most
    confident wrong ones, each captioned with the predicted class and its probability.

    ``rows``: :class:`fervid.analysis.interpret.GalleryRow` per class (indices into ``faces``).
    """
    w, h = gallery_size(len(classes), per_class)
    c = _Canvas(w, h, title, subtitle)
    x_wrong = GAL_LABEL_W + per_class * GAL_CELL + GAL_GAP
    y0 = TITLE_H + GAL_HEADER_H
    for x, text, color in ((GAL_LABEL_W, "most confident right", "darkgreen"),
                           (x_wrong, "most confident wrong", "firebrick")):
        c.text(x + per_class * GAL_CELL / 2, TITLE_H + GAL_HEADER_H / 2, text, ha="center", va="center",
               fontsize=9, color=color, weight="bold")
    counts = np.bincount(labels, minlength=len(classes))
    for r, (name, row) in enumerate(zip(classes, rows)):
        y = y0 + r * (GAL_CELL + GAL_CAPTION_H)
        c.text(GAL_LABEL_W - 6, y + GAL_CELL / 2 - 7, name, ha="right", va="center", fontsize=9, weight="bold")
        c.text(GAL_LABEL_W - 6, y + GAL_CELL / 2 + 8, f"n={counts[r]}", ha="right", va="center", fontsize=7,
               color="dimgray")
        for x_base, picks, right in ((GAL_LABEL_W, row.right, True), (x_wrong, row.wrong, False)):
            for q, i in enumerate(picks[:per_class]):
                x = x_base + q * GAL_CELL
                k = int(probs[i].argmax())
                c.face(x, y, GAL_CELL, faces[i], smooth=True)
                p = f"{probs[i, k]:.2f}".lstrip("0")  # ".96": keeps "surprise .96" inside its cell
                caption = p if right else f"{classes[k]} {p}"
                c.text(x + GAL_CELL / 2, y + GAL_CELL + 1, caption, ha="center", va="top", fontsize=6.5,
                       color="darkgreen" if right else "firebrick")
            if not picks:
                c.text(x_base + per_class * GAL_CELL / 2, y + GAL_CELL / 2, "none", ha="center", va="center",
                       fontsize=8, color="dimgray")
    return c.save(path, overwrite)


# --- from a model to a figure (what the CLI and the Python API call) -------------------------

def filters_figure(model: Any, meta: dict[str, Any], path: str | os.PathLike, overwrite: bool = True) -> Path:
    """The first convolution's kernels of ``model`` as a grid PNG."""
    from .interpret import first_filters

    name, kernels = first_filters(model)
    lim = float(np.abs(kernels).max())
    title = f"{meta.get('arch', 'model')}: first-layer filters"
    subtitle = (f"{name}: {len(kernels)} kernels {kernels.shape[1]}x{kernels.shape[2]}; red +, blue -, "
                f"one scale (max |w| {lim:.2f})")
    return render_filters(kernels, path, title, subtitle, overwrite)


def maps_figure(model: Any, meta: dict[str, Any], face: np.ndarray, path: str | os.PathLike,
                layers: Sequence[str] | None = None, channels: int = 16, title: str = "",
                overwrite: bool = True) -> list[str]:
    """Feature maps of ``layers`` (default: the last conv of each stage) for one equalized face;
    returns the layers drawn."""
    from .interpret import check_layers, default_map_layers, feature_maps, probe_layers

    infos = probe_layers(model, face.shape[-1])
    names = check_layers(infos, layers) if layers else default_map_layers(infos)
    kinds = {i.name: i.kind for i in infos}
    maps = {n: m[0] for n, m in feature_maps(model, face[None], names, meta).items()}
    labels = {n: f"{n} ({kinds[n]}, {'x'.join(map(str, m.shape))}): the {min(channels, len(m))} most "
                 f"active of {len(m)} channels" for n, m in maps.items()}
    render_maps(face, maps, path, channels, labels, title or f"{meta.get('arch', 'model')} feature maps",
                overwrite)
    return names


METHOD_NAMES = {"gradcam": "Grad-CAM", "hirescam": "HiResCAM"}


class CamPanels(NamedTuple):
    cams: np.ndarray  # [N, T, S, S] in [0, 1]
    probs: np.ndarray  # [N, C]
    targets: np.ndarray  # [N, T] class indices, -1 for an empty cell
    layer: str


def cam_targets(pred: np.ndarray, n_classes: int, targets: Sequence[int] | None = None,
                all_classes: bool = False) -> np.ndarray:
    """Which class each panel explains: [N, T].

    Default: each face's prediction. ``targets``: the prediction first, then those classes
    (one the face is predicted as is not repeated, leaving an empty cell at the row's end).
    ``all_classes``: every class in the model's order, the prediction among them.
    """
    n = len(pred)
    if all_classes:
        return np.tile(np.arange(n_classes), (n, 1))
    extra = list(dict.fromkeys(int(t) for t in targets or []))
    out = np.full((n, 1 + len(extra)), -1, dtype=np.int64)
    for i, p in enumerate(pred):
        row = [int(p)] + [t for t in extra if t != p]
        out[i, :len(row)] = row
    return out


def gradcam_panels(model: Any, meta: dict[str, Any], faces: np.ndarray, targets: Sequence[int] | None = None,
                   all_classes: bool = False, layer: str | None = None, method: str = "gradcam") -> CamPanels:
    """Grad-CAM (or HiResCAM) of equalized faces [N, S, S] for the classes :func:`cam_targets` picks."""
    from .interpret import grad_cam

    first = grad_cam(model, faces, None, layer, meta, method)
    t = cam_targets(first.targets, first.probs.shape[1], targets, all_classes)
    cams = np.zeros((len(faces), t.shape[1], *faces.shape[-2:]), np.float32)
    for j in range(t.shape[1]):
        col = t[:, j]
        if np.array_equal(col, first.targets):
            cams[:, j] = first.cams
        elif (col >= 0).any():
            cams[:, j] = grad_cam(model, faces, np.where(col >= 0, col, 0), first.layer, meta, method).cams
    return CamPanels(cams, first.probs, t, first.layer)


def gradcam_figure(model: Any, meta: dict[str, Any], faces: np.ndarray, path: str | os.PathLike,
                   targets: Sequence[int] | None = None, all_classes: bool = False, layer: str | None = None,
                   title: str = "", overwrite: bool = True, method: str = "gradcam") -> CamPanels:
    """Grad-CAM panels for the faces of one image, as one PNG (a row per face)."""
    panels = gradcam_panels(model, meta, faces, targets, all_classes, layer, method)
    name = METHOD_NAMES.get(method, method)
    render_gradcam(faces, panels.cams, panels.probs, panels.targets, meta["classes"], path, title or name,
                   f"{meta.get('arch', 'model')}, {name} at {panels.layer}", overwrite)
    return panels


def gallery_figure(model: Any, meta: dict[str, Any], faces: Any, path: str | os.PathLike, per_class: int = 6,
                   batch_size: int = 256, device: str = "cpu", overwrite: bool = True) -> dict[str, Any]:
    """Most confident right and wrong predictions per true class of a :class:`fervid.data.FaceSet`
    whose classes are the model's; returns the accuracy and counts shown in the title."""
    import torch

    from ..training.runtime import predict_logits
    from .interpret import gallery_picks

    logits = predict_logits(model, faces.images, batch_size=batch_size, device=device)
    probs = torch.softmax(logits.float(), dim=1).numpy()
    rows = gallery_picks(probs, faces.labels, per_class)
    acc = float((probs.argmax(1) == faces.labels).mean()) if len(faces) else 0.0
    width = gallery_size(len(faces.classes), per_class)[0]
    title = _short(f"{meta.get('arch', 'model')} on {faces.name or 'the data'}", width // 8)
    subtitle = f"{len(faces)} faces, accuracy {acc:.1%}; a row per true class, captions: predicted class, probability"
    render_gallery(faces.images, faces.labels, probs, rows, list(faces.classes), path, per_class, title,
                   _short(subtitle, width // 5, keep_end=False), overwrite)
    return {"n": len(faces), "accuracy": acc, "right": sum(len(r.right) for r in rows),
            "wrong": sum(len(r.wrong) for r in rows)}
