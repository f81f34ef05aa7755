"""The benchmark's results as Markdown tables and an accuracy-against-speed (Pareto) chart.

Everything here reads the results dict (the JSON file), so the tables and the chart can be
re-made from a saved run: ``python bench/run.py --from-json docs/bench/results.json``.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

STAGES = ("decode", "detect", "align", "classify", "track", "draw", "encode", "other")


def _f(v: Any, nd: int = 0) -> str:
    if v is None:
        return "-"
    return f"{v:,.{nd}f}" if isinstance(v, (int, float)) else str(v)


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def classifier_rate(res: dict, arch: str, fmt: str, batch: int) -> float | None:
    for r in res.get("classifier", {}).get("rows", []):
        if r["arch"] == arch and r["format"] == fmt and r["batch"] == batch:
            return r["faces_per_s"]
    return None


def peer_rate(res: dict, fmt: str, batch: int) -> float | None:
    for r in (res.get("peer") or {}).get("classifier", {}).get("rows", []):
        if r["format"] == fmt and r["batch"] == batch:
            return r["faces_per_s"]
    return None


def targets(res: dict) -> list[dict]:
    """The issue's two targets, measured: video frames/s, and classifier faces/s against fer's."""
    out = []
    v = res.get("pipeline", {}).get("video", {}).get("fps")
    if v is not None:
        out.append({"target": "video, 640x480, one face, detection on every frame: >= 30 frames/s",
                    "measured": f"{v:.1f} frames/s", "met": v >= 30})
    shipped = res.get("classifier", {}).get("shipped", {}).get("arch")
    peer = peer_rate(res, "fer-tflite-int8", 32)
    if shipped and peer:
        best = max(((classifier_rate(res, shipped, f, 32) or 0, f) for f in
                    ("onnx-fp32", "onnx-int8", "torch-fp32", "torch-bf16")))
        out.append({"target": "classifier, batch 32: >= fer's faces/s",
                    "measured": f"{shipped} {best[1]} {best[0]:,.0f} vs fer {peer:,.0f} faces/s "
                                f"({best[0] / peer:.2f}x)", "met": best[0] >= peer})
    return out


def markdown(res: dict) -> str:
    m, cls, pipe = res["machine"], res.get("classifier", {}), res.get("pipeline", {})
    peer = res.get("peer") or {}
    lines = [f"Machine: {m['cpu']}, {m['cores']} cores ({', '.join(m['simd'])}); {m['threads']} thread(s) per "
             f"runtime; Python {m['python']}, PyTorch {m['torch']}, ONNX Runtime {m['onnxruntime']}, "
             f"OpenCV {m['opencv']}. Date {m['date']}, commit {m.get('commit')}, load average at start "
             f"{m.get('load_average')}.", "", f"Command: `{res['command']}` ({res['wall_seconds']:.0f} s).", ""]
    if res.get("quick"):
        lines += ["**Quick run** (`--quick`): short timings and few samples; for a smoke test, not for quoting.", ""]
    if cls:
        peak = cls["peak_gflops"]
        lines += ["### Classifier: faces per second", "",
                  f"Faces/s from uint8 48x48 faces to class scores, by batch size. GFLOP/s at batch 32 = faces/s "
                  f"x MFLOPs (int8 rows: operations, not floating point); '% peak' compares it with the best "
                  f"1024x1024 matrix product on the same threads ({peak['fp32']} GFLOP/s fp32, {peak['bf16']} "
                  "bf16), measured before and after.", "",
                  "| model | weights | runtime | MFLOPs | b=1 | b=8 | b=32 | b=256 | GFLOP/s b=32 | % peak |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        seen = []
        for r in cls["rows"]:
            key = (r["arch"], r["format"])
            if key in seen:
                continue
            seen.append(key)
            rates = [classifier_rate(res, *key, b) for b in cls["batches"]]
            b32 = next(x for x in cls["rows"] if (x["arch"], x["format"], x["batch"]) == key + (32,))
            share = f"{100 * b32['peak_share']:.0f}%" if b32.get("peak_share") is not None else "int8"
            lines.append(f"| {r['arch']} | {'trained' if r['trained'] else 'random'} | {r['format']} | "
                         f"{r['mflops']:.1f} | " + " | ".join(_f(x) for x in rates) +
                         f" | {_f(b32['gflops'], 1)} | {share} |")
        for row in (peer.get("classifier") or {}).get("rows", []):
            if row["batch"] != 1:
                continue
            rates = [peer_rate(res, row["format"], b) for b in cls["batches"]]
            lines.append(f"| fer ({peer['params']:,} params) | trained | {row['format']} | {peer['mflops']:.1f} | "
                         + " | ".join(_f(x) for x in rates) + f" | {_f((rates[2] or 0) * peer['mflops'] / 1000, 1)} | - |")
        lines.append("")
        acc = cls.get("accuracy") or {}
        if acc:
            n = cls.get("accuracy_faces")
            lines += [f"### PublicTest accuracy ({n} faces) and speed at batch 32", "",
                      "| model | runtime | PublicTest accuracy | faces/s b=32 | vs onnx-fp32 |", "| --- | --- | --- | --- | --- |"]
            ship = cls["shipped"]["arch"]
            base = classifier_rate(res, ship, "onnx-fp32", 32)
            for fmt, a in acc.items():
                r = classifier_rate(res, ship, fmt, 32)
                lines.append(f"| {ship} (shipped) | {fmt} | {100 * a:.2f}% | {_f(r)} | {_ratio(r, base)} |")
            for key, a in ((peer.get("classifier") or {}).get("accuracy") or {}).items():
                fmt, kind = key.split("/")
                r = peer_rate(res, fmt, 32)
                lines.append(f"| fer, {kind} faces | {fmt} | {100 * a:.2f}% | {_f(r)} | {_ratio(r, base)} |")
            if "onnx-int8" in acc:
                d = 100 * (acc["onnx-int8"] - acc["onnx-fp32"])
                lines += ["", f"int8 (static, QDQ) changes PublicTest accuracy by {d:+.2f} points for a "
                          f"{_ratio(classifier_rate(res, ship, 'onnx-int8', 32), base)} speed-up at batch 32; "
                          f"`quantize_dynamic` ran at {_f(cls.get('int8_dynamic_faces_per_s_b32'))} faces/s."]
            lines.append("")
        elif cls.get("accuracy_note"):
            lines += [f"Accuracy: {cls['accuracy_note']}", ""]
    if pipe:
        lines += _pipeline(res, pipe, peer)
    tr = res.get("training")
    if tr:
        lines += ["### Training", "", f"Training step (augmentation, forward, backward, SGD), batch {tr['batch']}; "
                  "seconds per epoch = 28,709 Training faces / rate (evaluation not included).", "",
                  "| model | fp32 NCHW | fp32 NHWC | bf16 NCHW | bf16 NHWC (engine) | engine / fp32 NCHW | "
                  "engine s/epoch |", "| --- | --- | --- | --- | --- | --- | --- |"]
        by = {(r["arch"], r["precision"], r.get("layout", "nchw")): r for r in tr["rows"]}
        for arch in dict.fromkeys(r["arch"] for r in tr["rows"]):
            cell = [by.get((arch, p, lay)) for p in ("fp32", "bf16") for lay in ("nchw", "nhwc")]
            ips = [c["images_per_s"] if c else None for c in cell]
            eng = cell[3] or cell[2]
            lines.append(f"| {arch} | " + " | ".join(_f(v) for v in ips) + f" | {_ratio(eng and eng['images_per_s'], ips[0])}"
                         f" | {_f(eng and eng['seconds_per_epoch'])} |")
        lines.append("")
    tg = res.get("targets") or []
    if tg:
        lines += ["### Targets", "", "| target | measured | met |", "| --- | --- | --- |"]
        lines += [f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'no'} |" for t in tg]
        lines.append("")
    return "\n".join(lines)


def _pipeline(res: dict, pipe: dict, peer: dict) -> list[str]:
    lines = []
    ds = pipe.get("detect_sizes") or []
    if ds:
        lines += ["### Detection size", "", "YuNet on the photos (recall of pasted faces) and on a 640x480 clip frame.",
                  "", "| detect size (px) | faces found | detection ms/frame |", "| --- | --- | --- |"]
        lines += [f"| {r['detect_size']} | {100 * r['recall']:.1f}% | {_f(r['detect_ms_640x480'], 1)} |" for r in ds]
        lines.append("")
    p, pp = pipe.get("predict"), peer.get("predict")
    if p:
        lines += ["### predict: photos (640x480, 1-4 faces each)", "",
                  f"{p['images']} photos, {p['faces']} faces. Read, detect, align, classify, draw and write "
                  "an annotated copy per photo.", "",
                  "| | images/s | faces found | " + " | ".join(f"{k} ms" for k in p["ms_per_image"]) + " |",
                  "| --- | --- | --- | " + " | ".join("---" for _ in p["ms_per_image"]) + " |",
                  f"| fervid | {p['images_per_s']:.1f} | {100 * p['recall']:.1f}% | "
                  + " | ".join(_f(v, 1) for v in p["ms_per_image"].values()) + " |"]
        if pp:
            lines.append(f"| fer | {pp['images_per_s']:.1f} | {100 * pp['recall']:.1f}% | "
                         + " | ".join(_f(pp["ms_per_image"].get(k), 1) for k in p["ms_per_image"]) + " |")
            lines.append(f"| fervid / fer | {_ratio(p['images_per_s'], pp['images_per_s'])} | | |")
        lines.append("")
    v, pv = pipe.get("video"), peer.get("video")
    if v:
        keys = [k for k in STAGES if k in v["ms_per_frame"]]
        lines += ["### video: 640x480 clip, one face, detection on every frame", "",
                  f"{v['frames']} frames; fervid"
                  + (f" (detect size {pipe['detect_size_default']} unless given)" if pipe.get("detect_size_default")
                     else "") + " writes the annotated video and the per-frame CSV, fer runs "
                  "`Video.analyze` (annotated video, results as a DataFrame). Milliseconds per frame by stage.", "",
                  "| | frames/s | " + " | ".join(keys) + " |", "| --- | --- | " + " | ".join("---" for _ in keys) + " |",
                  f"| fervid | {v['fps']:.1f} | " + " | ".join(_f(v["ms_per_frame"][k], 2) for k in keys) + " |"]
        for vs in pipe.get("video_variants") or []:
            lines.append(f"| fervid, {vs['label']} | {vs['fps']:.1f} | "
                         + " | ".join(_f(vs["ms_per_frame"].get(k), 2) for k in keys) + " |")
        if pv:
            lines.append(f"| fer | {pv['fps']:.1f} | " + " | ".join(_f(pv["ms_per_frame"].get(k), 2) for k in keys) + " |")
            lines.append(f"| fervid / fer | {_ratio(v['fps'], pv['fps'])} | " + " | ".join("" for _ in keys) + " |")
        lines.append("")
    if not peer.get("available", False):
        lines += [f"fer comparison skipped: {peer.get('note', 'peer not run')}.", ""]
    return lines


def pareto(res: dict, path: Path) -> Path | None:
    """PublicTest accuracy against faces/s at batch 32: the shipped model in each runtime, fer's
    model as its package runs it, and (without an accuracy) the untrained architectures' speeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cls, peer = res.get("classifier", {}), res.get("peer") or {}
    acc = cls.get("accuracy") or {}
    if not acc:
        return None
    ship = cls["shipped"]["arch"]
    fig, ax = plt.subplots(figsize=(8, 5.2), dpi=110)
    pts = [(classifier_rate(res, ship, f, 32), 100 * a, f"{ship} {f}", "tab:blue") for f, a in acc.items()]
    for key, a in ((peer.get("classifier") or {}).get("accuracy") or {}).items():
        fmt, kind = key.split("/")
        pts.append((peer_rate(res, fmt, 32), 100 * a, f"fer {fmt.removeprefix('fer-')} ({kind})",
                    "tab:orange" if kind == "raw" else "navajowhite"))
    pts = [p for p in pts if p[0]]
    k = 0
    for x, y, label, color in sorted(pts):  # fer's labels above its points, fervid's below, staggered
        ax.scatter(x, y, s=60, color=color, edgecolor="black", zorder=3)
        if label.startswith("fer"):
            off = (0, 7)
        else:
            off, k = (0, -14 if k % 2 == 0 else -25), k + 1
        ax.annotate(label, (x, y), textcoords="offset points", xytext=off, fontsize=8, ha="center")
    front = sorted(pts, key=lambda p: -p[0])
    best, line = -1.0, []
    for x, y, *_ in front:
        if y > best:
            best = y
            line.append((x, y))
    if len(line) > 1:
        ax.plot(*zip(*sorted(line)), color="grey", lw=1, ls="--", zorder=2, label="Pareto front")
    ys = [p[1] for p in pts]
    floor = min(ys) - 6
    others = sorted({(r["arch"], r["format"]) for r in cls["rows"] if not r["trained"] and r["format"] == "onnx-fp32"})
    for arch, fmt in others:
        x = classifier_rate(res, arch, fmt, 32)
        ax.scatter(x, floor + 1, marker="|", s=120, color="grey")
        ax.annotate(arch, (x, floor + 1), textcoords="offset points", xytext=(0, 6), fontsize=7,
                    rotation=90, ha="center", va="bottom", color="grey")
    ax.set_ylim(floor, max(ys) + 3)
    ax.set_xscale("log")
    from matplotlib.ticker import FixedLocator, FuncFormatter, NullFormatter

    lo, hi = ax.get_xlim()
    ticks = [m * 10 ** e for e in range(0, 6) for m in (1, 2, 5) if lo <= m * 10 ** e <= hi]
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("faces per second at batch 32 (log scale)")
    ax.set_ylabel("PublicTest accuracy (%)")
    m = res["machine"]
    ax.set_title(f"PublicTest accuracy against speed: {m['cpu']}, {m['threads']} thread(s), {m['date']}", fontsize=9)
    ax.text(0.01, 0.01, "grey ticks: other architectures, random weights, onnx-fp32 speed only (no accuracy)",
            transform=ax.transAxes, fontsize=7, color="grey")
    ax.grid(alpha=0.3, which="both")
    if len(line) > 1:
        ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path
