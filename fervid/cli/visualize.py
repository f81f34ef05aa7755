"""``fervid visualize``: look inside a model: layers, first-layer filters, feature maps, Grad-CAM, gallery.

One subcommand per view (``fervid visualize gradcam photo.jpg``). They share --model (a
PyTorch .safetensors model, by default the shipped one), --threads and, where a file is
written, --overwrite; the work is done by :mod:`fervid.analysis.interpret_figures` and :mod:`fervid.analysis.interpret`.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _load(args: argparse.Namespace):
    """Torch, then the model (without torch: one line from cli.main, not a traceback)."""
    import torch

    from ..analysis.interpret import load_insight_model

    if args.threads:
        torch.set_num_threads(args.threads)
    return load_insight_model(args.model)


def _refuse_existing(path: Path, overwrite: bool) -> None:
    """Fail before any work, not after it."""
    if path.exists() and not overwrite:
        from ..errors import BadInputError

        raise BadInputError(f"{path}: already exists (use --overwrite to replace it)")


def _class_list(meta: dict, text: str | None) -> list[int]:
    from ..analysis.interpret import class_index

    return [class_index(meta, c) for c in (text or "").split(",") if c.strip()]


def _detect_flag(args: argparse.Namespace) -> bool | None:
    return False if args.no_detect else None


def _detector(args: argparse.Namespace):
    """The face detector recognition would use with these flags (None with --no-detect); the
    flags are checked as every recognising command checks them."""
    from .common import recognizer_settings

    settings = recognizer_settings(args, threads=args.threads or None)  # --threads: torch's, and the detector's
    if not settings.detect:
        return None
    from ..recognition.detect import FaceDetector

    return FaceDetector(**settings.detector_kwargs())


def run_layers(args: argparse.Namespace) -> int:
    from ..analysis.interpret import default_map_layers, gradcam_layer, probe_layers

    model, meta, path = _load(args)
    infos = probe_layers(model, int(meta.get("input_size", 48)))
    maps, cam = default_map_layers(infos), gradcam_layer(infos)
    width = max(len(i.name) for i in infos)
    print(f"{path} ({meta['arch']}): {len(infos)} layers, output shape for one face")
    for i in infos:
        notes = (["default for maps"] if i.name in maps else []) + (["Grad-CAM"] if i.name == cam else [])
        if i.same_as:
            notes.append(f"same output as {i.same_as}")
        if i.calls > 1:
            notes.append(f"runs {i.calls}x, last call shown")
        shape = "x".join(map(str, i.shape))
        print(f"{i.name:<{width}}  {i.kind:<18} {shape:<12} {', '.join(notes)}".rstrip())
    return 0


def run_filters(args: argparse.Namespace) -> int:
    from ..analysis.interpret_figures import filters_figure

    out = Path(args.output)
    _refuse_existing(out, args.overwrite)
    model, meta, _ = _load(args)
    filters_figure(model, meta, out, overwrite=args.overwrite)
    print(f"wrote {out}")
    return 0


def run_maps(args: argparse.Namespace) -> int:
    from ..analysis.interpret import face_crops
    from ..analysis.interpret_figures import maps_figure
    from ..errors import BadInputError
    from ..images import read_image

    out = Path(args.output)
    _refuse_existing(out, args.overwrite)
    detector = _detector(args)  # before the model: a bad flag is one line, at once
    model, meta, _ = _load(args)
    layers = [n.strip() for n in args.layers.split(",") if n.strip()] if args.layers else None
    if layers:  # a typo in a layer name is reported before the photo is searched for faces
        from ..analysis.interpret import check_layers, probe_layers

        check_layers(probe_layers(model, int(meta.get("input_size", 48))), layers)
    found = face_crops(read_image(args.image), int(meta.get("input_size", 48)), _detect_flag(args), detector)
    if not len(found.crops):
        raise BadInputError(f"{args.image}: no face found (for an already cropped face use --no-detect)")
    if len(found.crops) < args.face:
        raise BadInputError(f"{args.image}: --face {args.face} asked for, but only {len(found.crops)} "
                            f"face{'s' * (len(found.crops) != 1)} found")
    drawn = maps_figure(model, meta, found.crops[args.face - 1], out, layers, args.channels,
                        title=f"{meta['arch']} feature maps: {Path(args.image).name}", overwrite=args.overwrite)
    print(f"layers {', '.join(drawn)}; wrote {out}")
    return 0


def _cam_out_path(out_dir: Path, name: str, taken: set[Path]) -> Path:
    p = out_dir / Path(name).with_suffix(".png")
    if p in taken:  # photo.jpg and photo.png in one folder
        p = out_dir / f"{Path(name).with_suffix('')}-{Path(name).suffix.lstrip('.')}.png"
    taken.add(p)
    return p


def run_gradcam(args: argparse.Namespace) -> int:
    from ..analysis.interpret import face_crops, probe_layers
    from ..analysis.interpret_figures import METHOD_NAMES, gradcam_figure
    from ..errors import BadInputError
    from ..images import read_image
    from ..recognition.image_files import expand_inputs

    out_dir = Path(args.out_dir)
    detector = _detector(args)  # before the model: a bad flag is one line, at once
    model, meta, _ = _load(args)
    targets = _class_list(meta, args.target)
    size = int(meta.get("input_size", 48))
    if args.layer:
        from ..analysis.interpret import check_layers

        check_layers(probe_layers(model, size), [args.layer])
    expanded = expand_inputs(args.inputs, skip=out_dir)
    taken: set[Path] = set()
    plan = [(item, _cam_out_path(out_dir, item.name, taken)) for item in expanded.files]
    existing = [p for _, p in plan if p.exists()]
    if existing and not args.overwrite:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        raise BadInputError(f"{existing[0]}: already exists{more} (use --overwrite to replace, or another --out-dir)")
    failures = list(expanded.errors)
    for e in expanded.errors:
        print(f"fervid visualize: error: {e}", file=sys.stderr)
    n_faces = n_written = n_empty = n_maps = n_blank = 0
    for item, dest in plan:
        try:
            found = face_crops(read_image(item.path), size, _detect_flag(args), detector)
        except BadInputError as e:
            failures.append(e)
            print(f"fervid visualize: error: {e}", file=sys.stderr)
            continue
        if not len(found.crops):
            n_empty += 1
            print(f"{item.path}: no face found (for an already cropped face use --no-detect)", file=sys.stderr)
            continue
        panels = gradcam_figure(model, meta, found.crops, dest, targets, args.all_classes, args.layer,
                                title=item.path.name, overwrite=args.overwrite, method=args.method)
        n_faces += len(found.crops)
        n_written += 1
        shown = panels.targets >= 0
        n_maps += int(shown.sum())
        n_blank += int((shown & ~(panels.cams.max(axis=(2, 3)) > 0)).sum())
        preds = ", ".join(f"{meta['classes'][int(p.argmax())]} {float(p.max()):.2f}" for p in panels.probs)
        print(f"{item.path}: {preds} ({METHOD_NAMES[args.method]} at {panels.layer}) -> {dest}")
    parts = [f"{n_faces} face{'s' * (n_faces != 1)} in {n_written} PNG{'s' * (n_written != 1)}"]
    if n_blank:
        parts.append(f"{n_blank} of {n_maps} maps empty (nothing at this layer raised the score: try "
                     "another --method or an earlier --layer)")
    if n_empty:
        parts.append(f"{n_empty} image{'s' * (n_empty != 1)} without a face")
    if failures:
        parts.append(f"{len(failures)} failed")
    print(f"{', '.join(parts)}; " + (f"written to {out_dir}/" if n_written else "nothing written"))
    return 2 if failures or not n_written else 0


def run_gallery(args: argparse.Namespace) -> int:
    from ..analysis.evaluate import load_eval_faces
    from ..analysis.interpret_figures import gallery_figure
    from ..training.runtime import pick_device

    out = Path(args.output)
    _refuse_existing(out, args.overwrite)
    model, meta, _ = _load(args)
    device = pick_device(args.device)
    faces = load_eval_faces(args.data, args.split, meta)
    stats = gallery_figure(model.to(device), meta, faces, out, args.per_class, args.batch_size, str(device),
                           overwrite=args.overwrite)
    print(f"{stats['n']} faces, accuracy {stats['accuracy']:.4f}; {stats['right']} right and {stats['wrong']} "
          f"wrong shown; wrote {out}")
    return 0


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {text}")
    return v


def register(sub: argparse._SubParsersAction) -> None:
    from .common import add_detector_flags

    model = argparse.ArgumentParser(add_help=False)
    model.add_argument("--model", metavar="MODEL",
                       help="a fervid .safetensors model or training run folder (default: the shipped model, "
                       "fervid/assets/model.safetensors); an exported .onnx cannot be used, it keeps no gradients")
    model.add_argument("--threads", type=int, default=0, metavar="N",
                       help="CPU threads for torch (0 = torch's default)")
    writes = argparse.ArgumentParser(add_help=False)
    writes.add_argument("--overwrite", action="store_true", help="replace existing output files")
    faces = argparse.ArgumentParser(add_help=False)
    faces.add_argument("--no-detect", action="store_true",
                       help="take each image as one already cropped face (default: an image of the model's "
                       "input size, 48x48, is one face; others are searched with the face detector and aligned)")
    add_detector_flags(faces)

    p = sub.add_parser("visualize", help="look inside a model: filters, feature maps, Grad-CAM, gallery",
                       description="Pictures of what a model has learnt and where it looks. Needs PyTorch and a "
                       ".safetensors model (the shipped one by default).")
    views = p.add_subparsers(dest="view", metavar="VIEW", required=True)

    v = views.add_parser("layers", parents=[model], help="list the model's layer names and output shapes",
                         description="Every named layer with its output shape for one face; marks the default "
                         "layers of `maps` and the Grad-CAM layer. Names are what --layers/--layer take.")
    v.set_defaults(func=run_layers)

    v = views.add_parser("filters", parents=[model, writes], help="first-layer filters as a grid PNG",
                         description="The kernels of the model's first convolution on one shared colour scale.")
    v.add_argument("-o", "--output", default="filters.png", metavar="PNG", help="PNG to write (default: filters.png)")
    v.set_defaults(func=run_filters)

    v = views.add_parser("maps", parents=[model, faces, writes], help="feature maps of layers for a face, as a PNG",
                         description="Feature maps of chosen layers for one face: a row per layer, the face "
                         "then the most active channels.")
    v.add_argument("image", help="a photo (the face is detected and aligned) or a 48x48 face crop")
    v.add_argument("--layers", metavar="LIST",
                   help="comma list of layer names (see `fervid visualize layers`; default: the last conv of "
                   "each stage)")
    v.add_argument("--channels", type=_positive, default=16, metavar="N", help="channels shown per layer (default: 16)")
    v.add_argument("--face", type=_positive, default=1, metavar="N",
                   help="which face of a photo, 1 = largest (default: 1)")
    v.add_argument("-o", "--output", default="maps.png", metavar="PNG", help="PNG to write (default: maps.png)")
    v.set_defaults(func=run_maps)

    v = views.add_parser("gradcam", parents=[model, faces, writes], help="Grad-CAM heat maps over faces",
                         description="Grad-CAM heat maps: for each image a PNG with a row per face, the aligned "
                         "48x48 face as the model saw it beside the heat map of the predicted class (and of "
                         "--target classes), each captioned with the class probability. Exit code 2 if any "
                         "input failed.")
    v.add_argument("inputs", nargs="+", metavar="PATH", help="image files, folders (searched recursively) or globs")
    which = v.add_mutually_exclusive_group()
    which.add_argument("--target", metavar="CLASSES",
                       help="comma list of classes to explain besides the predicted one, e.g. happy,sad")
    which.add_argument("--all-classes", action="store_true", help="one heat map per class of the model")
    v.add_argument("--layer", help="layer whose activations are weighted (default: the last conv's output; "
                   "see `fervid visualize layers`)")
    v.add_argument("--method", choices=("gradcam", "hirescam"), default="hirescam",
                   help="hirescam (default): each activation weighted by its own gradient (HiResCAM), the same "
                   "map as Grad-CAM for models ending in global pooling (resnet_*) and not empty where a flatten "
                   "head makes Grad-CAM's mean gradients cancel (vgg_*, the shipped model: Grad-CAM is empty for "
                   "61%% of PublicTest faces there, docs/visualize.md); gradcam: classic Grad-CAM, each channel "
                   "weighted by its mean gradient")
    v.add_argument("-o", "--out-dir", default="fervid-gradcam", metavar="DIR",
                   help="folder for the PNGs, one per image named after it (default: fervid-gradcam)")
    v.set_defaults(func=run_gradcam)

    v = views.add_parser("gallery", parents=[model, writes],
                         help="most confident right and wrong predictions per class, as a PNG",
                         description="A grid with a row per true class: the most confident right predictions, "
                         "then the most confident wrong ones with the class predicted.")
    v.add_argument("--data", required=True, help="FER-2013 source: fer2013.csv or a folder in the Kaggle layout")
    v.add_argument("--split", default="test",
                   help="split: Training, PublicTest, PrivateTest, train, test, all (default: test)")
    v.add_argument("--per-class", type=_positive, default=6, metavar="N",
                   help="faces per class on each side (default: 6)")
    v.add_argument("--batch-size", type=_positive, default=256, metavar="N",
                   help="faces per forward pass (default: 256)")
    v.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    v.add_argument("-o", "--output", default="gallery.png", metavar="PNG", help="PNG to write (default: gallery.png)")
    v.set_defaults(func=run_gallery)
