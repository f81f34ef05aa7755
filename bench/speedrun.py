"""Time-to-accuracy: train one config for several seeds and report accuracy against wall-clock minutes.

    python -m bench.speedrun --config configs/fast.yaml --seeds 3
    python -m bench.speedrun --config configs/fast.yaml --seeds 2 --set whiten=false --out runs/speedrun/no-whiten

Each seed trains with fervid's own engine (``fervid.training.engine.train``) into ``OUT/seed<N>``, so a
seed killed by the end of a session resumes from its last epoch when the command is run
again, and a finished seed is read back, not retrained. The report (``OUT/report.md``,
``OUT/summary.json``, ``OUT/curves.png``) gives, per seed and as mean +- std: PublicTest
accuracy of the last epoch, the best epoch, minutes to reach 65%, 68% and 70%, and
training images per second; and the machine, threads and load average it ran on, since a
shared machine slows a run without saying so. Minutes are the run's own wall clock:
training and the per-epoch evaluation, from the first epoch to the last, not the
seconds spent loading data before it.
"""
from __future__ import annotations

if __name__ == "__main__" and not __package__:  # run as a file: the same as `python -m bench.speedrun`
    import os
    import sys
    from pathlib import Path

    _root = str(Path(__file__).resolve().parents[1])
    _path = os.pathsep.join(p for p in (_root, os.environ.get("PYTHONPATH", "")) if p)
    os.execve(sys.executable, [sys.executable, "-m", "bench.speedrun", *sys.argv[1:]], {**os.environ, "PYTHONPATH": _path})

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from .common import ROOT, log, machine  # noqa: E402

TARGETS = (0.65, 0.68, 0.70)


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``key=value`` overrides (``augment.rotate=5`` for augmentation), values read as YAML scalars."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise SystemExit(f"speedrun: --set {item!r}: write KEY=VALUE")
        out[key.strip()] = yaml.safe_load(value)
    return out


def seed_config(config: dict[str, Any], sets: dict[str, Any], seed: int, threads: int, out: Path):
    from fervid.training.config import TrainConfig

    d = json.loads(json.dumps(config))
    for key, value in sets.items():
        if key.startswith("augment."):
            d.setdefault("augment", {})[key.split(".", 1)[1]] = value
        else:
            d[key] = value
    d.update(seed=seed, threads=threads, out=str(out))
    return TrainConfig.from_dict(d)


def read_metrics(run: Path) -> list[dict[str, Any]]:
    path = run / "metrics.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def minutes_to(history: list[dict[str, Any]], target: float) -> float | None:
    """Wall-clock minutes at the end of the first epoch whose val accuracy reached ``target``."""
    for m in history:
        if m["val_acc"] >= target:
            return round(m["elapsed"] / 60, 2)
    return None


def seed_row(seed: int, history: list[dict[str, Any]]) -> dict[str, Any]:
    last = history[-1]
    best = max(history, key=lambda m: m["val_acc"])
    full = [m["images_per_s"] for m in history if m.get("size", 48) == 48] or [m["images_per_s"] for m in history]
    return {"seed": seed, "epochs": last["epoch"], "minutes": round(last["elapsed"] / 60, 2),
            "final_acc": last["val_acc"], "best_acc": best["val_acc"], "best_epoch": best["epoch"],
            **{f"min_to_{round(t * 100)}": minutes_to(history, t) for t in TARGETS},
            "images_per_s": round(sum(m["images_per_s"] for m in history) / len(history), 1),
            "images_per_s_48px": round(statistics.median(full), 1)}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def ms(key: str) -> dict[str, float | None]:
        vals = [r[key] for r in rows if r[key] is not None]
        if not vals:
            return {"mean": None, "std": None, "n": 0}
        return {"mean": round(statistics.mean(vals), 4), "std": round(statistics.stdev(vals), 4) if len(vals) > 1 else 0.0,
                "n": len(vals)}

    keys = ["final_acc", "best_acc", "minutes", "images_per_s", "images_per_s_48px"] + \
        [f"min_to_{round(t * 100)}" for t in TARGETS]
    return {k: ms(k) for k in keys}


def plot(histories: dict[int, list[dict[str, Any]]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for seed, h in sorted(histories.items()):
        ax.plot([m["elapsed"] / 60 for m in h], [100 * m["val_acc"] for m in h], marker=".", label=f"seed {seed}")
    for t in TARGETS:
        ax.axhline(100 * t, color="grey", lw=0.6, ls=":")
    ax.set_xlabel("wall-clock minutes (training + per-epoch evaluation)")
    ax.set_ylabel("PublicTest accuracy, %")
    ax.set_ylim(40, 75)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{100 * v:.2f}" if pct else f"{v}"


def report_md(name: str, info: dict[str, Any], rows: list[dict[str, Any]], summ: dict[str, Any],
              sets: dict[str, Any], command: str) -> str:
    lines = [f"# Speedrun: {name}", "", f"Command: `{command}`", ""]
    if sets:
        lines += ["Overrides: " + ", ".join(f"`{k}={v}`" for k, v in sets.items()), ""]
    lines += [f"Machine: {info['cpu']}, {info['cores']} cores, {info['threads']} threads, torch {info.get('torch')}, "
              f"load average at start {info['load_average']}, at end {info.get('load_average_end')}; "
              f"commit {info.get('commit')}, {info['date']}", "",
              "| seed | epochs | minutes | final acc % | best acc % (epoch) | min to 65% | min to 68% | min to 70% "
              "| images/s (all, 48 px) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['seed']} | {r['epochs']} | {r['minutes']} | {fmt(r['final_acc'], True)} | "
                     f"{fmt(r['best_acc'], True)} ({r['best_epoch']}) | {fmt(r['min_to_65'])} | {fmt(r['min_to_68'])} | "
                     f"{fmt(r['min_to_70'])} | {r['images_per_s']}, {r['images_per_s_48px']} |")
    f, b, m = summ["final_acc"], summ["best_acc"], summ["minutes"]
    lines += ["", f"**Final accuracy {100 * f['mean']:.2f} +- {100 * f['std']:.2f}%** (mean +- std of {f['n']} seeds), "
              f"best epoch {100 * b['mean']:.2f} +- {100 * b['std']:.2f}%, in {m['mean']:.1f} +- {m['std']:.1f} minutes. "
              + "; ".join(f"{round(t * 100)}% reached by {summ[f'min_to_{round(t * 100)}']['n']} of {len(rows)} seeds"
                          + (f" after {summ[f'min_to_{round(t * 100)}']['mean']:.1f} min on average"
                             if summ[f"min_to_{round(t * 100)}"]['n'] else "") for t in TARGETS) + ".", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", required=True, help="a TrainConfig YAML/JSON file, e.g. configs/fast.yaml")
    ap.add_argument("--seeds", type=int, default=3, help="how many seeds (default 3)")
    ap.add_argument("--seed-start", type=int, default=0, help="first seed (default 0)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training (default 2)")
    ap.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                    help="override a config field for this run (repeatable), e.g. whiten=false or augment.rotate=5")
    ap.add_argument("--out", help="run folder (default runs/speedrun/<config name>)")
    ap.add_argument("--report-only", action="store_true", help="only report on the seeds already in --out")
    args = ap.parse_args(argv)

    from fervid.errors import FervidError
    from fervid.cli.train import load_config_file

    try:
        config = load_config_file(args.config)
    except FervidError as e:
        print(f"speedrun: {e}", file=sys.stderr)
        return 2
    sets = parse_sets(args.sets)
    name = Path(args.config).stem
    out = Path(args.out or ROOT / "runs" / "speedrun" / name)
    info = machine(args.threads)
    log(f"machine: {info['cpu']}, {info['cores']} cores, {args.threads} threads, load {info['load_average']}")
    seeds = list(range(args.seed_start, args.seed_start + args.seeds))
    if not args.report_only:
        from fervid.training.engine import train

        for seed in seeds:
            run = out / f"seed{seed}"
            cfg = seed_config(config, sets, seed, args.threads, run)
            done = read_metrics(run)
            if done and (done[-1]["epoch"] >= cfg.epochs or (run / "done.json").exists()):
                log(f"seed {seed}: finished earlier ({len(done)} epochs), read back")
                continue
            t0 = time.time()
            try:
                summary = train(cfg, resume=(run / "last.pt").exists(), progress=False)
            except FervidError as e:
                print(f"speedrun: seed {seed}: {e}", file=sys.stderr)
                return 1
            (run / "done.json").write_text(json.dumps(summary, indent=2))
            log(f"seed {seed}: best {summary['best_val_acc']:.4f} in {(time.time() - t0) / 60:.1f} min")
    histories = {s: h for s in seeds if (h := read_metrics(out / f"seed{s}"))}
    if not histories:
        print(f"speedrun: no finished seed in {out}", file=sys.stderr)
        return 1
    info["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    rows = [seed_row(s, h) for s, h in histories.items()]
    summ = summarise(rows)
    command = "python -m bench.speedrun " + " ".join(argv if argv is not None else sys.argv[1:])
    out.mkdir(parents=True, exist_ok=True)
    plot(histories, f"{name} {' '.join(args.sets)} - {info['cpu']}, {args.threads} threads", out / "curves.png")
    (out / "summary.json").write_text(json.dumps({"config": str(args.config), "sets": sets, "machine": info,
                                                  "seeds": rows, "summary": summ, "command": command}, indent=2))
    text = report_md(name, info, rows, summ, sets, command)
    (out / "report.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
