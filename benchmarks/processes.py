"""One process against N processes (torchrun + DistributedDataParallel) on the same recipe, side by side.

    python benchmarks/processes.py --nproc 2 [--recipe cpu] [--seed 0] [-- extra CLI flags]

Runs `python -m helpers.train` once as one process and once under
`torchrun --standalone --nproc_per_node=N`, with the same recipe, seed and global
batch, one after the other on this machine, and records final accuracy, training
seconds (evaluation excluded) and wall-clock seconds of each in
results/processes_<device>.json. On a CPU, gloo connects the processes and they
share the cores (N processes x cores/N threads); on GPUs, NCCL, one GPU each.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path


def run(cmd: list[str], run_dir: Path) -> dict:
    """Run one training command; its metrics.json plus the wall-clock seconds."""
    print("$", " ".join(cmd), flush=True)
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True)
    wall = time.perf_counter() - t0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    history = json.loads((run_dir / "history.json").read_text())
    return {"command": " ".join(cmd[1:]), "wall_seconds": wall, "test_acc": metrics["test_acc"],
            "test_acc_tta": metrics.get("test_acc_tta"), "train_seconds": metrics["train_seconds_total"],
            "device": metrics["device"], "processes": metrics["processes"],
            "test_acc_per_epoch": [row["test_acc"] for row in history]}


def main() -> None:
    import torch

    from helpers.course import reduced_mode, results_dir, runs_dir
    from helpers.data.cifar10 import dataset_label
    from helpers.plumbing.files import atomic_write_json

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nproc", type=int, default=2, help="processes for the distributed run (default 2)")
    p.add_argument("--recipe", default="cpu", help="named recipe (default cpu)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="results file (default results/processes_<cuda|cpu>.json; runs/ in reduced mode)")
    p.add_argument("flags", nargs="*", help="more `python -m helpers.train` flags, after --")
    args = p.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    out = Path(args.out) if args.out else (runs_dir() if reduced_mode() else results_dir()) / f"processes_{device}.json"
    common = ["-m", "helpers.train", "--recipe", args.recipe, "--seed", str(args.seed), "--no-progress",
              "--no-download", *args.flags]
    with tempfile.TemporaryDirectory() as tmp:
        one = run([sys.executable, *common, "--run-dir", f"{tmp}/one"], Path(tmp, "one"))
        many = run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={args.nproc}",
                    *common, "--run-dir", f"{tmp}/many"], Path(tmp, "many"))
    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "torch": torch.__version__,
              "data": dataset_label(), "reduced_mode": reduced_mode(), "recipe": args.recipe, "seed": args.seed,
              "cpu_count": os.cpu_count(), "one_process": one, f"{args.nproc}_processes": many,
              "accuracy_difference": many["test_acc"] - one["test_acc"],
              "train_time_ratio": many["train_seconds"] / one["train_seconds"]}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, record)
    for name, r in (("1 process", one), (f"{args.nproc} processes", many)):
        tta = f" (flip-TTA {r['test_acc_tta']:.2f}%)" if r["test_acc_tta"] is not None else ""
        print(f"{name:12s} test acc {r['test_acc']:.2f}%{tta}  training {r['train_seconds']:.1f} s  "
              f"wall {r['wall_seconds']:.1f} s  [{r['device']}]")
    print(f"difference {record['accuracy_difference']:+.2f} points, training time ratio "
          f"{record['train_time_ratio']:.2f}; wrote {out}")


if __name__ == "__main__":
    main()
