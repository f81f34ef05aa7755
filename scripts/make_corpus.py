#!/usr/bin/env python3
"""Generate fervid's corpus of malformed and unusual inputs, with the outcome each must have.

Every file is made here from the photo shipped in ``fervid/assets`` or from synthetic
pixels; nothing is downloaded and nothing is committed (the 10,000 x 10,000 image is a
118 KB PNG, the decompression bombs are ~1 KB headers). ``make_corpus(dir)`` returns one
:class:`Case` per input: what kind of input it is (which entry points can receive it),
whether it must be handled (``ok``) or refused with a one-line error (``error``) naming
the file and containing ``problem``, and what the web service must answer. ``special``
cases (FIFOs, self-links, a sparse 2 GB file, /dev/zero, an output under a file) are
paths, not bytes: the service never sees them.

Model cases need PyTorch and onnx to be built; without them they are left out (and
reported as skipped by ``python scripts/make_corpus.py DIR``).

    python scripts/make_corpus.py [--markdown] /tmp/corpus   # writes the files, prints the table
"""
from __future__ import annotations

import csv
import json
import shutil
import struct
import sys
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "fervid" / "assets"
PHOTO = ASSETS / "sample.jpg"  # public-domain portrait, one face
FER_CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


@dataclass
class Case:
    """One corpus input and what every entry point must do with it."""

    name: str
    path: Path
    kind: str  # image | video | data | model | run
    expect: str  # ok | error | any (either, as long as errors are one line)
    problem: str = ""  # substring of the error message (which also names the file)
    serve: int | None = None  # HTTP status of the web service for image/video uploads
    faces: int | None = None  # ok images: faces the shipped detector must find (None: not checked)
    upright: Path | None = None  # EXIF cases: the same photo stored upright, boxes must agree
    note: str = ""
    extra: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.kind:<6} {self.name:<26} {self.expect:<5} {self.problem or '-'}"


# --- helpers -------------------------------------------------------------------------------------

def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_uniform(width: int, height: int, value: int = 128, rows: int | None = None) -> bytes:
    """A gray PNG of ``width`` x ``height`` with every pixel ``value``, compressed row by row.

    ``rows``: encode only that many rows, giving a file whose header promises far more
    pixels than its data holds (a decompression bomb's header on a 1 KB file).
    """
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    comp = zlib.compressobj(9)
    row = b"\x00" + bytes([value]) * width
    parts = [comp.compress(row) for _ in range(height if rows is None else rows)]
    parts.append(comp.flush())
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", b"".join(parts))
            + _png_chunk(b"IEND", b""))


def jpeg_claiming(data: bytes, width: int, height: int) -> bytes:
    """A copy of JPEG ``data`` whose frame header (SOF) claims ``width`` x ``height``."""
    out = bytearray(data)
    i = 2
    while i < len(out) - 9:
        if out[i] != 0xFF:
            raise ValueError("not a baseline JPEG")
        marker, length = out[i + 1], struct.unpack(">H", out[i + 2:i + 4])[0]
        if marker in (0xC0, 0xC1, 0xC2):
            out[i + 5:i + 9] = struct.pack(">HH", height, width)
            return bytes(out)
        i += 2 + length
    raise ValueError("no SOF marker")


def _photo() -> tuple[np.ndarray, "object"]:
    """The portrait as BGR (cropped to 512x384, so rotations change the shape) and as PIL RGB."""
    from PIL import Image

    bgr = cv2.imread(str(PHOTO), cv2.IMREAD_COLOR)[:384]
    return bgr, Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


def _write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _fer_rows(n: int, seed: int = 0) -> list[tuple[int, str, str]]:
    """``n`` synthetic fer2013.csv rows (label, pixels, Usage), Training and PublicTest alternating."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        px = rng.integers(0, 256, 48 * 48)
        rows.append((i % 7, " ".join(map(str, px)), "Training" if i % 2 == 0 else "PublicTest"))
    return rows


def _csv(path: Path, header: list[str], rows: list) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return path


def _face_folder(root: Path, layout: dict[str, int], seed: int = 0) -> Path:
    """A Kaggle-layout folder: ``{"train/happy": 2, ...}`` -> that many 48x48 PNGs each."""
    rng = np.random.default_rng(seed)
    for sub, n in layout.items():
        (root / sub).mkdir(parents=True, exist_ok=True)
        split = "Training" if sub.startswith("train") else "PublicTest"
        for i in range(n):
            cv2.imwrite(str(root / sub / f"{split}_{i}.png"), rng.integers(0, 256, (48, 48), dtype=np.uint8))
    root.mkdir(parents=True, exist_ok=True)
    return root


# --- the corpus ----------------------------------------------------------------------------------

def image_cases(d: Path) -> list[Case]:
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    bgr, pil = _photo()
    cases: list[Case] = []

    def ok(name: str, faces: int | None, note: str, serve: int = 200, **kw) -> None:
        cases.append(Case(name, d / name, "image", "ok", serve=serve, faces=faces, note=note, **kw))

    def bad(name: str, problem: str, serve: int, note: str) -> None:
        cases.append(Case(name, d / name, "image", "error", problem, serve=serve, note=note))

    cv2.imwrite(str(d / "photo.jpg"), bgr)
    ok("photo.jpg", 1, "plain JPEG portrait (the reference)")
    pil.save(d / "progressive.jpg", progressive=True, quality=90)
    ok("progressive.jpg", 1, "progressive JPEG")
    pil.convert("CMYK").save(d / "cmyk.jpg", quality=90)
    ok("cmyk.jpg", 1, "CMYK JPEG")
    pil.convert("L").save(d / "gray.jpg", quality=90)
    ok("gray.jpg", 1, "grayscale JPEG")
    cv2.imwrite(str(d / "rgb16.png"), bgr.astype(np.uint16) * 257)
    ok("rgb16.png", 1, "16-bit RGB PNG")
    cv2.imwrite(str(d / "gray16.png"), cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257)
    ok("gray16.png", 1, "16-bit grayscale PNG")
    pil.convert("P", palette=Image.Palette.ADAPTIVE).save(d / "palette.png")
    ok("palette.png", 1, "palette (indexed) PNG")
    rgba = pil.convert("RGBA")
    alpha = np.full(rgba.size[::-1], 255, np.uint8)
    alpha[:, :64] = 0  # a transparent strip away from the face
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(d / "rgba.png")
    ok("rgba.png", 1, "RGBA PNG with a transparent strip")
    pil.convert("LA").save(d / "gray_alpha.png")
    ok("gray_alpha.png", 1, "grayscale + alpha PNG")
    pil.convert("L").save(d / "gray.png")
    ok("gray.png", 1, "grayscale PNG")
    cv2.imwrite(str(d / "one_pixel.png"), np.full((1, 1, 3), 200, np.uint8))
    ok("one_pixel.png", 0, "1x1 image")
    cv2.imwrite(str(d / "one_row.png"), np.full((1, 700, 3), 90, np.uint8))
    ok("one_row.png", 0, "700x1 image")
    _write(d / "huge_10k.png", png_uniform(10_000, 10_000))
    ok("huge_10k.png", 0, "10,000 x 10,000 gray PNG (118 KB on disk, 100 megapixels)", serve=413)

    # EXIF orientation: the pixels are stored turned, the tag says how to turn them back.
    # Pillow's exif_transpose undoes tag 6 with ROTATE_270, 8 with ROTATE_90, 3 with ROTATE_180.
    store = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270, 3: Image.Transpose.ROTATE_180}
    for tag, op in store.items():
        exif = Image.Exif()
        exif[0x0112] = tag
        name = f"exif_orientation_{tag}.jpg"
        pil.transpose(op).save(d / name, exif=exif.tobytes(), quality=95)
        ok(name, 1, f"EXIF orientation {tag}: stored turned, must be found upright", upright=d / "photo.jpg")

    frames = [pil.convert("P", palette=Image.Palette.ADAPTIVE),
              pil.rotate(8).convert("P", palette=Image.Palette.ADAPTIVE)]
    frames[0].save(d / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    gif_ok = bool(cv2.haveImageReader(str(d / "animated.gif")))
    cases.append(Case("animated.gif", d / "animated.gif", "image", "ok" if gif_ok else "error",
                      "" if gif_ok else "not an image", serve=415, faces=1 if gif_ok else None,
                      note="animated GIF (first frame, where OpenCV reads GIF; the service refuses GIF)"))

    _write(d / "empty.jpg", b"")
    bad("empty.jpg", "empty file", 400, "zero-byte file")
    jpg = (d / "photo.jpg").read_bytes()
    _write(d / "truncated.jpg", jpg[: len(jpg) // 2])
    bad("truncated.jpg", "truncated", 422, "JPEG cut in half")
    png = (d / "gray.png").read_bytes()
    _write(d / "truncated.png", png[: len(png) // 2])
    bad("truncated.png", "truncated", 422, "PNG cut in half")
    _write(d / "text.jpg", b"this is a text file, not a JPEG\n" * 20)
    bad("text.jpg", "not an image", 422, "text file named .jpg")
    _write(d / "header_only.jpg", jpg[:200])
    bad("header_only.jpg", "truncated", 422, "the first 200 bytes of a JPEG")
    _write(d / "bomb.png", png_uniform(100_000, 100_000, rows=8))
    bad("bomb.png", "megapixels", 413, "PNG header claiming 100,000 x 100,000 (1 KB file)")
    _write(d / "bomb.jpg", jpeg_claiming(jpg, 65_000, 65_000))
    bad("bomb.jpg", "megapixels", 413, "JPEG whose frame header claims 65,000 x 65,000")
    tiff = bytearray(cv2.imencode(".tiff", bgr)[1].tobytes())
    tiff[4:8] = struct.pack("<I", 0xFFFF0000)  # first directory offset far past the end
    _write(d / "bad_directory.tiff", bytes(tiff))
    bad("bad_directory.tiff", "not an image", 422, "TIFF whose directory offset points past the end")
    _write(d / "truncated.gif", (d / "animated.gif").read_bytes()[:300])
    bad("truncated.gif", "not an image", 415, "the first 300 bytes of a GIF")
    damaged = bytearray(jpg)
    mid = len(damaged) // 2
    damaged[mid:mid + 400] = bytes(400)  # zeroed scan data, end marker intact
    _write(d / "damaged_scan.jpg", bytes(damaged))
    cases.append(Case("damaged_scan.jpg", d / "damaged_scan.jpg", "image", "any", serve=None,
                      note="JPEG with 400 zeroed bytes mid-scan (decoders differ: partial image or error)"))
    return cases


def video_cases(d: Path) -> list[Case]:
    d.mkdir(parents=True, exist_ok=True)
    bgr, _ = _photo()
    frame = cv2.resize(bgr, (320, 240), interpolation=cv2.INTER_AREA)
    cases: list[Case] = []

    def write(path: Path, fourcc: str, n: int, size=(320, 240)) -> Path:
        w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, size)
        for i in range(n):
            w.write(np.roll(frame, 2 * i, axis=1) if (frame.shape[1], frame.shape[0]) == size
                    else cv2.resize(frame, size))
        w.release()
        return path

    write(d / "clip.avi", "MJPG", 12)
    cases.append(Case("clip.avi", d / "clip.avi", "video", "ok", serve=200, note="12-frame MJPG AVI (the reference)",
                      extra={"frames": 12}))
    write(d / "clip.mp4", "mp4v", 12)
    mp4_ok = (d / "clip.mp4").stat().st_size > 1000
    if mp4_ok:
        cases.append(Case("clip.mp4", d / "clip.mp4", "video", "ok", serve=200, note="12-frame MPEG-4 MP4",
                          extra={"frames": 12}))
        data = (d / "clip.mp4").read_bytes()
        _write(d / "truncated.mp4", data[: len(data) // 2])
        cases.append(Case("truncated.mp4", d / "truncated.mp4", "video", "error", "cannot be read as a video",
                          serve=422, note="MP4 cut in half (its index, at the end, is lost)"))
        write(d / "zero_frames.mp4", "mp4v", 0)
        cases.append(Case("zero_frames.mp4", d / "zero_frames.mp4", "video", "error", "video", serve=422,
                          note="MP4 container with no frames"))
    data = (d / "clip.avi").read_bytes()
    _write(d / "truncated.avi", data[: len(data) // 2])
    cases.append(Case("truncated.avi", d / "truncated.avi", "video", "ok", serve=200,
                      note="AVI cut in half: the frames before the cut are processed, with a warning",
                      extra={"warning": "truncated"}))
    write(d / "zero_frames.avi", "MJPG", 0)
    cases.append(Case("zero_frames.avi", d / "zero_frames.avi", "video", "error", "no decodable frames",
                      serve=422, note="AVI with a header and no frames"))
    # A raw MJPEG stream is concatenated JPEGs: nothing stops the frame size from changing.
    with open(d / "size_change.mjpeg", "wb") as fh:
        for i in range(10):
            size = (320, 240) if i < 5 else (480, 360)
            fh.write(cv2.imencode(".jpg", cv2.resize(frame, size))[1].tobytes())
    cases.append(Case("size_change.mjpeg", d / "size_change.mjpeg", "video", "ok", serve=200,
                      note="MJPEG stream whose frames grow from 320x240 to 480x360 halfway",
                      extra={"frames": 10}))
    _write(d / "empty.mp4", b"")
    cases.append(Case("empty.mp4", d / "empty.mp4", "video", "error", "empty file", serve=400,
                      note="zero-byte .mp4"))
    _write(d / "text.mp4", b"not a video at all\n" * 50)
    cases.append(Case("text.mp4", d / "text.mp4", "video", "error", "cannot be read as a video", serve=422,
                      note="text file named .mp4"))
    return cases


def data_cases(d: Path) -> list[Case]:
    d.mkdir(parents=True, exist_ok=True)
    rows = _fer_rows(14)
    head = ["emotion", "pixels", "Usage"]
    cases: list[Case] = []

    def add(name: str, expect: str, problem: str, note: str, path: Path | None = None) -> None:
        cases.append(Case(name, path or d / name, "data", expect, problem, note=note))

    _csv(d / "ok.csv", head, rows)
    add("ok.csv", "ok", "", "14 valid rows, Training and PublicTest")
    _csv(d / "no_usage.csv", ["emotion", "pixels"], [r[:2] for r in rows])
    add("no_usage.csv", "ok", "", "emotion,pixels without Usage (split 'all' only)")
    _csv(d / "missing_column.csv", ["emotion", "Usage"], [(r[0], r[2]) for r in rows])
    add("missing_column.csv", "error", "missing column(s) pixels", "no pixels column")
    bad = [list(r) for r in rows]
    bad[3][1] = " ".join(bad[3][1].split()[:2000])
    _csv(d / "wrong_pixel_count.csv", head, bad)
    add("wrong_pixel_count.csv", "error", "2000 pixels, expected 2304", "row 5 has 2000 pixels")
    bad = [list(r) for r in rows]
    bad[2][1] = bad[2][1].replace(" ", " x", 1)
    _csv(d / "non_numeric.csv", head, bad)
    add("non_numeric.csv", "error", "non-numeric pixel", "a pixel that is 'x12'")
    bad = [list(r) for r in rows]
    bad[1][0] = 9
    _csv(d / "unknown_label.csv", head, bad)
    add("unknown_label.csv", "error", "unknown emotion label 9", "label 9")
    bad = [list(r) for r in rows]
    bad[1][0] = "happy"
    _csv(d / "label_text.csv", head, bad)
    add("label_text.csv", "error", "is not a number", "label 'happy'")
    bad = [list(r) for r in rows]
    bad[4][1] = bad[4][1].replace(bad[4][1].split()[0], "300", 1)
    _csv(d / "pixel_range.csv", head, bad)
    add("pixel_range.csv", "error", "outside 0-255", "pixel value 300")
    bad = [list(r) for r in rows]
    bad[0][2] = "Validation"
    _csv(d / "unknown_usage.csv", head, bad)
    add("unknown_usage.csv", "error", "unknown Usage", "Usage 'Validation'")
    bad = [list(r) for r in rows]
    bad[5] = bad[5][:1]
    _csv(d / "ragged.csv", head, bad)
    add("ragged.csv", "error", "expected 3 columns, found 1", "a row with one column")
    _csv(d / "header_only.csv", head, [])
    add("header_only.csv", "error", "no data rows", "header and nothing else")
    _write(d / "empty.csv", b"")
    add("empty.csv", "error", "empty file", "zero-byte fer2013.csv")
    _write(d / "binary.csv", bytes(np.random.default_rng(1).integers(0, 256, 4096, dtype=np.uint8)))
    add("binary.csv", "error", "binary.csv", "4 KB of random bytes named .csv")
    _write(d / "nul.csv", b"emotion,pixels,Usage\n0,\x00\x00\x00,Training\n")
    add("nul.csv", "error", "nul.csv", "NUL bytes in a row")

    _face_folder(d / "folder_ok", {"train/happy": 3, "train/sad": 3, "test/happy": 2, "test/sad": 2})
    add("folder_ok", "ok", "", "Kaggle layout, 10 faces", d / "folder_ok")
    _face_folder(d / "folder_unknown_class", {"train/happy": 2, "train/joyful": 2, "test/happy": 2})
    add("folder_unknown_class", "error", "unknown emotion folder 'joyful'", "class folder 'joyful'",
        d / "folder_unknown_class")
    (d / "folder_empty").mkdir(exist_ok=True)
    add("folder_empty", "error", "no images found", "an empty folder", d / "folder_empty")
    _face_folder(d / "folder_corrupt", {"train/happy": 2, "test/happy": 2})
    _write(d / "folder_corrupt" / "train" / "happy" / "Training_9.jpg", b"not a jpeg")
    add("folder_corrupt", "error", "Training_9.jpg: cannot read this image", "one text file named .jpg",
        d / "folder_corrupt")
    _face_folder(d / "folder_truncated", {"train/happy": 2, "test/happy": 2})
    face = cv2.imencode(".jpg", np.random.default_rng(2).integers(0, 256, (48, 48), dtype=np.uint8))[1].tobytes()
    _write(d / "folder_truncated" / "test" / "happy" / "PublicTest_7.jpg", face[: len(face) // 2])
    add("folder_truncated", "error", "PublicTest_7.jpg: cannot read this image", "one JPEG cut in half",
        d / "folder_truncated")
    _face_folder(d / "folder_deep", {"train/happy/extra": 2})
    add("folder_deep", "error", "expected <split>/<emotion>/<image>", "images one level too deep",
        d / "folder_deep")
    return cases


def model_cases(d: Path) -> list[Case]:
    """Model files (need PyTorch and onnx to build); every one but two must be refused."""
    import torch

    from fervid.training.checkpoint import make_meta, save_model
    from fervid.export import onnx_bytes
    from fervid.models import create_model

    d.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    cases: list[Case] = []

    def add(name: str, expect: str, problem: str, note: str) -> None:
        cases.append(Case(name, d / name, "model", expect, problem, note=note))

    tiny = create_model("vgg_tiny", num_classes=7).eval()
    meta = make_meta("vgg_tiny", FER_CLASSES)
    save_model(d / "ok.safetensors", tiny, meta)
    add("ok.safetensors", "ok", "", "random-init vgg_tiny with fervid metadata")
    onnx = onnx_bytes(tiny, meta)
    _write(d / "ok.onnx", onnx)
    add("ok.onnx", "ok", "", "the same exported to ONNX, metadata inside")

    other = create_model("baseline", num_classes=7)
    save_model(d / "other_arch.safetensors", other, meta)
    add("other_arch.safetensors", "error", "weights do not match architecture 'vgg_tiny'",
        "weights of 'baseline' under metadata that says vgg_tiny")
    save_model(d / "meta_classes_mismatch.safetensors", tiny, make_meta("vgg_tiny", FER_CLASSES[:5]))
    add("meta_classes_mismatch.safetensors", "error", "weights do not match",
        "metadata lists 5 classes, the weights have 7 outputs")
    save_model(d / "unknown_arch.safetensors", tiny, make_meta("vgg_xxl", FER_CLASSES))
    add("unknown_arch.safetensors", "error", "unknown architecture 'vgg_xxl'", "metadata names an arch fervid lacks")
    save_model(d / "newer_version.safetensors", tiny, {**meta, "version": 99})
    add("newer_version.safetensors", "error", "newer than this fervid reads", "format version 99")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in tiny.state_dict().items()}, str(d / "plain.safetensors"))
    add("plain.safetensors", "error", "not a fervid model", "safetensors weights without fervid metadata")
    data = (d / "ok.safetensors").read_bytes()
    _write(d / "truncated.safetensors", data[: len(data) - 5000])
    add("truncated.safetensors", "error", "truncated or damaged", "safetensors missing its last 5,000 bytes")
    torch.save(tiny.state_dict(), d / "checkpoint.pt")
    add("checkpoint.pt", "error", "not a fervid model", "a PyTorch state_dict (.pt) from torch.save")
    _write(d / "empty.onnx", b"")
    add("empty.onnx", "error", "empty file", "zero-byte .onnx")
    _write(d / "text.onnx", b"definitely not protobuf\n" * 10)
    add("text.onnx", "error", "not a fervid model", "text file named .onnx")
    shutil.copyfile(ASSETS / "yunet.onnx", d / "not_fervid.onnx")
    add("not_fervid.onnx", "error", "not a fervid model (no fervid metadata)",
        "a valid ONNX model that is not fervid's (the YuNet face detector)")
    shutil.copyfile(ASSETS / "yunet.onnx", d / "detector_with_meta.onnx")
    (d / "detector_with_meta.json").write_text(json.dumps(meta))
    add("detector_with_meta.onnx", "error", "input shape", "a foreign ONNX graph beside a valid fervid .json")

    import onnx as onnx_lib

    def with_meta(value: str | None):
        proto = onnx_lib.load_from_string(onnx)
        del proto.metadata_props[:]
        if value is not None:
            entry = proto.metadata_props.add()
            entry.key, entry.value = "fervid", value
        return proto.SerializeToString()

    _write(d / "meta_classes_mismatch.onnx", with_meta(json.dumps(make_meta("vgg_tiny", FER_CLASSES[:5]))))
    add("meta_classes_mismatch.onnx", "error", "7 outputs",
        "embedded metadata lists 5 classes, the graph has 7 outputs")
    _write(d / "sidecar_mismatch.onnx", with_meta(None))
    (d / "sidecar_mismatch.json").write_text(json.dumps(make_meta("vgg_tiny", ["happy", "sad", "neutral"])))
    add("sidecar_mismatch.onnx", "error", "7 outputs", "no embedded metadata; the sidecar .json lists 3 classes")
    _write(d / "bad_meta_types.onnx", with_meta(json.dumps({**meta, "version": "one", "classes": "happy"})))
    add("bad_meta_types.onnx", "error", "not a fervid model", "fervid metadata with a string version and classes")
    _write(d / "meta_not_json.onnx", with_meta("{not json"))
    add("meta_not_json.onnx", "error", "damaged fervid metadata", "fervid metadata that is not JSON")
    return cases


def run_cases(d: Path, data_csv: Path) -> list[Case]:
    """Training run folders to ``--resume``: a damaged last.pt and one from another architecture."""
    import torch

    from fervid.training.config import TrainConfig
    from fervid.models import create_model

    cases: list[Case] = []
    damaged = d / "run_damaged"
    damaged.mkdir(parents=True, exist_ok=True)
    _write(damaged / "last.pt", b"PK\x03\x04 half a zip file")
    cases.append(Case("run_damaged", damaged, "run", "error", "cannot read training checkpoint",
                      note="run folder whose last.pt is damaged"))
    other = d / "run_other_arch"
    other.mkdir(parents=True, exist_ok=True)
    model = create_model("baseline", num_classes=7)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    cfg = TrainConfig(data=str(data_csv), model="vgg_tiny", epochs=2, batch_size=4, threads=1, device="cpu",
                      out=str(other))
    torch.save({"config": cfg.to_dict(), "epoch": 0, "best_acc": 0.0, "best_epoch": 0, "stale": 0, "step": 1,
                "model": model.state_dict(), "optimizer": opt.state_dict(), "ema": None, "history": []},
               other / "last.pt")
    cases.append(Case("run_other_arch", other, "run", "error", "does not fit",
                      note="last.pt holding 'baseline' weights under a vgg_tiny config"))
    incomplete = d / "run_incomplete"
    incomplete.mkdir(parents=True, exist_ok=True)
    torch.save({"config": cfg.to_dict(), "epoch": 0}, incomplete / "last.pt")
    cases.append(Case("run_incomplete", incomplete, "run", "error", "incomplete",
                      note="last.pt that lacks the model and optimizer state"))
    return cases


def special_cases(d: Path) -> list[Case]:
    """Paths that are not plain files, or that hurt when read whole (issue #26).

    Each must be refused (or skipped, inside a folder) in one line without blocking and
    without reading more than a header: a FIFO would block ``open()`` forever, ``/dev/zero``
    never ends, two ``.`` self-links make a following walk exponential, a 2 GB sparse file
    costs 2 GB of memory if read before its header is checked. ``extra["entry"]`` says how
    the test gives it (``input``: as a file or folder argument; ``output``: as an output
    path). FIFOs and sparse files need a POSIX system; without ``mkfifo`` they are left out.
    """
    import os

    if d.exists():
        shutil.rmtree(d)  # FIFOs and links cannot be made over themselves
    d.mkdir(parents=True)
    bgr, _ = _photo()
    cases: list[Case] = []

    def add(name: str, path: Path, expect: str, problem: str, note: str, **extra) -> None:
        cases.append(Case(name, path, "special", expect, problem, note=note, extra={"entry": "input", **extra}))

    if hasattr(os, "mkfifo"):
        os.mkfifo(d / "fifo.jpg")
        add("fifo.jpg", d / "fifo.jpg", "error", "FIFO", "a FIFO (named pipe) named .jpg: refused, never opened")
        os.mkfifo(d / "fifo.csv")
        add("fifo.csv", d / "fifo.csv", "error", "FIFO", "a FIFO named fer2013-like .csv, given as --data",
            data=True)
        folder = d / "folder_with_fifo"
        folder.mkdir()
        cv2.imwrite(str(folder / "photo.jpg"), bgr)
        os.mkfifo(folder / "pipe.jpg")
        add("folder_with_fifo", folder, "skip", "FIFO",
            "a folder holding a photo and a FIFO named .jpg: the photo is processed, the FIFO skipped and counted",
            images=1, skipped=1)
    loops = d / "self_links"
    loops.mkdir()
    cv2.imwrite(str(loops / "photo.jpg"), bgr)
    os.symlink(".", loops / "s1")
    os.symlink(".", loops / "s2")
    add("self_links", loops, "ok", "", "a folder with two `.` self-links (ln -s . s1; ln -s . s2): walked once",
        images=1)
    with open(d / "sparse_2gb.jpg", "wb") as fh:  # a hole: no disk space, 2 GB to a reader
        fh.truncate(2 * 1024 ** 3)
    add("sparse_2gb.jpg", d / "sparse_2gb.jpg", "error", "fervid reads up to",
        "a 2 GB sparse file named .jpg: refused from its size, nothing read")
    with open(d / "zeros_100mb.jpg", "wb") as fh:
        fh.truncate(100 * 1000 ** 2)
    add("zeros_100mb.jpg", d / "zeros_100mb.jpg", "error", "no image header",
        "100 MB of zeros named .jpg (under the size limit): refused from its first 64 KB")
    if Path("/dev/zero").exists():
        add("/dev/zero", Path("/dev/zero"), "error", "character device", "/dev/zero, as an image and as --data",
            data=True)
    os.symlink("link_loop.jpg", d / "link_loop.jpg")
    add("link_loop.jpg", d / "link_loop.jpg", "error", "symbolic link loop", "a symbolic link to itself")
    _write(d / "blocker", b"a regular file where an output folder is asked for\n")
    cases.append(Case("blocker/out", d / "blocker" / "out", "special", "error", "is a file, not a folder",
                      note="an output path under a regular file (-o blocker/out): every writing command",
                      extra={"entry": "output", "blocker": d / "blocker"}))
    return cases


def make_corpus(dir: str | Path, models: bool | None = None) -> list[Case]:
    """Write every corpus file under ``dir`` and return the cases.

    ``models``: build the model and run-folder cases (need PyTorch + onnx); None = when importable.
    """
    d = Path(dir)
    d.mkdir(parents=True, exist_ok=True)
    cases = image_cases(d / "images") + video_cases(d / "videos") + data_cases(d / "data")
    cases += special_cases(d / "special")
    if models is None:
        try:
            import onnx  # noqa: F401
            import torch  # noqa: F401
        except ImportError:
            models = False
        else:
            models = True
    if models:
        cases += model_cases(d / "models")
        cases += run_cases(d / "runs", d / "data" / "ok.csv")
    names = [(c.kind, c.name) for c in cases]
    assert len(names) == len(set(names)), "case names must be unique per kind"
    return cases


def markdown(cases: list[Case]) -> str:
    """The corpus as a Markdown table (docs/reliability.md prints it)."""
    lines = ["| kind | input | what it is | expected | service |", "|---|---|---|---|---|"]
    for c in cases:
        expected = {"ok": "handled", "any": "handled or refused",
                    "skip": f"handled; skipped and counted: *{c.problem}*"}.get(c.expect, f"refused: *{c.problem}*")
        if c.expect == "ok" and c.faces is not None:
            expected += f", {c.faces} face{'s' * (c.faces != 1)}" + (" (upright)" if c.upright else "")
        lines.append(f"| {c.kind} | `{c.name}` | {c.note} | {expected} | {c.serve or ''} |")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = [a for a in argv if a != "--markdown"]
    if len(args) != 1:
        print("usage: python scripts/make_corpus.py [--markdown] DIR", file=sys.stderr)
        return 2
    cases = make_corpus(args[0])
    print(markdown(cases) if "--markdown" in argv else "\n".join(map(str, cases)))
    print(f"\n{len(cases)} cases in {args[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
