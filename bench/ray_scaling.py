"""Images/s of ``fervid predict`` in one process against ``fervid predict --ray`` with 1 and 2 workers,
side by side in one run, on the same generated photos (one FER face pasted on a 260x200 scene).

    python bench/ray_scaling.py --images 240 --out docs/bench/ray-scaling
    python bench/ray_scaling.py --address 127.0.0.1:6379        # a Ray already running

Every arm runs the whole command's work: list the files, read, detect, classify, write the table
(``--no-annotate`` for the single process: ``--ray`` writes no annotated copies). The ``--ray`` arms
include starting their actors and loading the model in each (that is part of every run), not
starting Ray itself, which is timed on its own. Arms alternate (single, ray 1, ray 2) for
``--repeats`` rounds so background load hits them alike; the median of each is reported.
"""
from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run as a file: the same as `python -m bench.ray_scaling`
    import os
    import sys
    from pathlib import Path

    _root = str(Path(__file__).resolve().parents[1])
    _path = os.pathsep.join(p for p in (_root, os.environ.get("PYTHONPATH", "")) if p)
    os.execve(sys.executable, [sys.executable, "-m", "bench.ray_scaling", *sys.argv[1:]], {**os.environ, "PYTHONPATH": _path})

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_images(folder: Path, n: int) -> None:
    import cv2
    import numpy as np

    faces = sorted((ROOT / "tests" / "data" / "fer" / "test").glob("*/*.jpg"))
    rng = np.random.default_rng(0)
    h, w = 200, 260
    yy, xx = np.mgrid[0:h, 0:w]
    base = (90 + 60 * xx / w + 30 * yy / h)[..., None] + np.array([10.0, 0.0, -10.0])
    for i in range(n):
        frame = np.clip(base + rng.normal(0, 6, (h, w, 3)), 0, 255).astype(np.uint8)
        face = cv2.resize(cv2.imread(str(faces[i % len(faces)]), cv2.IMREAD_GRAYSCALE), (120, 120),
                          interpolation=cv2.INTER_CUBIC)
        x, y = 20 + int(rng.integers(0, 100)), 20 + int(rng.integers(0, 50))
        frame[y:y + 120, x:x + 120] = cv2.cvtColor(face, cv2.COLOR_GRAY2BGR)
        cv2.imwrite(str(folder / f"img{i:05d}.jpg"), frame)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=240)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--address", default=None, help="a running Ray (default: start one here, 2 CPUs)")
    ap.add_argument("--out", default=None, help="folder for results.json and results.md")
    args = ap.parse_args(argv)

    import ray

    from fervid.cli import main as fervid
    from fervid.recognition.scaleout import predict

    tmp = Path(tempfile.mkdtemp(prefix="fervid-ray-bench-"))
    imgs = tmp / "imgs"
    imgs.mkdir()
    make_images(imgs, args.images)
    t0 = time.perf_counter()
    if args.address:
        ray.init(address=args.address)
    else:
        ray.init(num_cpus=os.cpu_count(), include_dashboard=False)
    ray_start = time.perf_counter() - t0
    cpus = ray.cluster_resources().get("CPU", 0)

    times: dict[str, list[float]] = {"single process, 1 thread": [], "single process, 2 threads": [],
                                     "--ray, 1 worker": [], "--ray, 2 workers": []}
    faces: dict[str, int] = {}
    for r in range(args.repeats):
        for arm in times:
            out = tmp / f"out-{r}-{len(times[arm])}-{arm.replace(' ', '').replace(',', '')}"
            t = time.perf_counter()
            if arm.startswith("single"):
                threads = arm.split(", ")[1].split()[0]
                rc = fervid(["predict", str(imgs), "-o", str(out), "--no-annotate", "-q", "--threads", threads])
                assert rc == 0, rc
                faces[arm] = sum(1 for line in (out / "predictions.csv").open() if ",ok," in line)
            else:
                workers = int(arm.split(", ")[1].split()[0])
                s = predict([str(imgs)], out, workers=workers, cpus_per_worker=1, batch_size=16, progress=False)
                assert not s.errors and s.images == args.images, s
                faces[arm] = s.faces
            times[arm].append(time.perf_counter() - t)
            print(f"round {r + 1}: {arm}: {times[arm][-1]:.2f} s", flush=True)

    base = statistics.median(times["single process, 2 threads"])
    rows = []
    for arm, ts in times.items():
        med = statistics.median(ts)
        rows.append({"arm": arm, "seconds": [round(x, 3) for x in ts], "median_s": round(med, 3),
                     "images_per_s": round(args.images / med, 1), "vs_single_2_threads": round(base / med, 2),
                     "faces": faces[arm]})
    result = {"images": args.images, "repeats": args.repeats, "ray_start_s": round(ray_start, 1), "ray_cpus": cpus,
              "ray_version": ray.__version__, "cpu": platform.processor() or platform.machine(),
              "cores": os.cpu_count(), "load_avg_at_end": os.getloadavg(), "arms": rows,
              "command": "python bench/ray_scaling.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    lines = [f"{args.images} images (260x200, one face each), median of {args.repeats} alternating rounds; "
             f"Ray {ray.__version__}, {cpus:g} CPUs; starting Ray took {ray_start:.1f} s (not in the times).", "",
             "| arm | median s | images/s | vs single process, 2 threads |", "| --- | ---: | ---: | ---: |"]
    lines += [f"| {r['arm']} | {r['median_s']:.2f} | {r['images_per_s']:.1f} | {r['vs_single_2_threads']:.2f}x |"
              for r in rows]
    text = "\n".join(lines)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
        (out / "results.md").write_text(text + "\n")
    ray.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
