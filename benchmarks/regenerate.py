"""Regenerate every full-scale number and figure on a CUDA machine, in named parts that resume.

    python benchmarks/regenerate.py                    # all parts, in order, skipping those already done
    python benchmarks/regenerate.py --parts recipes    # one part (data, recipes, ablations, notebooks, readme)
    python benchmarks/regenerate.py --dry-run          # print the plan and the time estimate only

Parts:
  data       make sure CIFAR-10 is there (download, or --prepare SCRIPT to build it from an offline archive)
  recipes    time-to-accuracy of the `gpu` and `upstream` recipes, one fresh process per seed
             -> results/time_to_accuracy_gpu.json, results/time_to_accuracy_upstream.json
  ablations  the complete sweep of notebook 05 -> results/ablations.json
  notebooks  execute every notebook in full mode, in place, so the committed outputs come from this run
  readme     rewrite the README's "Measured" section from results/*.json

A part that finishes is recorded in <out>/regenerate-state.json and skipped next time
(--force reruns it); parts that stop midway resume from their own records. Without a
CUDA device it refuses to run full mode (hours on a CPU) unless --allow-cpu; in reduced
mode (ALEXNET_REDUCED=1) everything runs tiny, into runs/regenerate-reduced/, to test the
command itself.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from helpers.course import reduced_mode  # noqa: E402
from helpers.plumbing.files import atomic_write_json  # noqa: E402

PARTS = ("data", "recipes", "ablations", "notebooks", "readme")
# Seconds per part, printed before anything starts. "reduced" was measured on a 2-core CPU; "cuda" and
# "cpu" are estimates from FLOP counts and the CPU recipe's measured speed (no GPU run has been made yet).
ESTIMATE_S = {
    "cuda": {"data": 30, "recipes": 240, "ablations": 180, "notebooks": 120, "readme": 1},
    "cpu": {"data": 30, "recipes": 3 * 600 + 3 * 20 * 5000, "ablations": 27 * 3 * 600, "notebooks": 1500, "readme": 1},
    "reduced": {"data": 5, "recipes": 200, "ablations": 50, "notebooks": 300, "readme": 1},
}


def run(cmd: list[str], env: dict | None = None) -> None:
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, cwd=REPO, env={**os.environ, **(env or {})})


def part_data(args, out: Path) -> None:
    if args.prepare:
        run([sys.executable, args.prepare, str(Path(os.environ.get("CIFAR10_ROOT", REPO / "data")))])
    run([sys.executable, "-c", "from helpers.data import load_cifar10, dataset_label; d = load_cifar10(); "
                               "print(dataset_label(), tuple(d.train_images.shape), tuple(d.test_images.shape))"])


def part_recipes(args, out: Path) -> None:
    for recipe in ("gpu", "upstream"):
        run([sys.executable, "benchmarks/time_to_accuracy.py", "--recipe", recipe, "--seeds", *map(str, args.seeds),
             "--out", str(out / f"time_to_accuracy_{recipe}.json")])


def part_ablations(args, out: Path) -> None:
    run([sys.executable, "-m", "helpers.ablation", "--seeds", *map(str, args.seeds), "--out",
         str(out / "ablations.json"), "--no-progress", *([] if reduced_mode() else ["--full"])])


def part_notebooks(args, out: Path) -> None:
    for nb in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        target = nb if not reduced_mode() else out / nb.name
        run(["jupyter", "nbconvert", "--to", "notebook", "--execute", "--ExecutePreprocessor.timeout=3600",
             "--output", str(target), str(nb)], env={"ALEXNET_REDUCED": "1" if reduced_mode() else "0"})


def part_readme(args, out: Path) -> None:
    sys.path.insert(0, str(REPO / "benchmarks"))
    from measured import write_readme_section

    readme = REPO / "README.md" if not reduced_mode() else out / "README.md"
    if reduced_mode():
        readme.write_text((REPO / "README.md").read_text())
    write_readme_section(readme, out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--parts", nargs="+", choices=PARTS, default=list(PARTS), help="parts to run, in this order")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds for recipes and ablations")
    p.add_argument("--out", help="results folder (default: results/, or runs/regenerate-reduced/ in reduced mode)")
    p.add_argument("--prepare", help="a prepare_cifar10.py-style script that builds $CIFAR10_ROOT offline")
    p.add_argument("--force", action="store_true", help="rerun parts already recorded as done")
    p.add_argument("--allow-cpu", action="store_true", help="run full mode without CUDA (takes hours)")
    p.add_argument("--dry-run", action="store_true", help="print the plan and estimate, run nothing")
    p.add_argument("--pack", help="afterwards, write the records, notebooks and README into this .tar.gz "
                                  "(one file to bring back from a borrowed GPU machine)")
    args = p.parse_args()

    import torch

    kind = "reduced" if reduced_mode() else ("cuda" if torch.cuda.is_available() else "cpu")
    out = Path(args.out) if args.out else REPO / ("runs/regenerate-reduced" if reduced_mode() else "results")
    out.mkdir(parents=True, exist_ok=True)
    state_file = out / "regenerate-state.json"
    state = json.loads(state_file.read_text()) if state_file.is_file() else {}
    todo = [part for part in PARTS if part in args.parts and (args.force or part not in state)]
    estimate = sum(ESTIMATE_S[kind][part] for part in todo)
    print(f"mode: {kind}; parts to run: {', '.join(todo) or 'none'}; already done: {', '.join(state) or 'none'}")
    print(f"estimated time: {estimate / 60:.0f} min ({', '.join(f'{p} ~{ESTIMATE_S[kind][p] / 60:.1f} min' for p in todo)})")
    if kind == "cpu" and not args.allow_cpu:
        print("error: no CUDA device. Full mode on a CPU takes hours; pass --allow-cpu to run it anyway, "
              "or ALEXNET_REDUCED=1 to test this command in minutes.")
        return 2
    if args.dry_run:
        return 0
    for part in todo:
        start = time.time()
        print(f"== {part}", flush=True)
        globals()[f"part_{part}"](args, out)
        state[part] = {"seconds": round(time.time() - start, 1),
                       "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        atomic_write_json(state_file, state)
        print(f"== {part} done in {state[part]['seconds']:.0f} s", flush=True)
    if args.pack:
        pack(Path(args.pack), out)
    return 0


def pack(archive: Path, out: Path) -> None:
    """One .tar.gz of the results folder, the notebooks and the README, paths relative to the repository."""
    import tarfile

    archive.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        # In reduced mode the notebooks and README were written into `out`, not over the repository's.
        repo_files = [] if reduced_mode() else [*(REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"), REPO / "README.md"]
        for path in sorted({*out.glob("*.json"), *out.glob("*.png"), *out.glob("*.ipynb"), *out.glob("README.md"),
                            *repo_files}):
            tar.add(path, arcname=str(path.resolve().relative_to(REPO)) if path.resolve().is_relative_to(REPO)
                    else path.name)
    print(f"packed {archive}")


if __name__ == "__main__":
    raise SystemExit(main())
