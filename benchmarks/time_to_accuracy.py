"""Time-to-accuracy of named recipes: training seconds until test accuracy first crosses 81.37%, 85%, 90%.

    python benchmarks/time_to_accuracy.py --recipe cpu --seeds 0 1 2 [--out results/time_to_accuracy_cpu.json]
    python benchmarks/time_to_accuracy.py --recipe cpu_v1 cpu --seeds 0 1 2 --out results/time_to_accuracy_cpu_vs_v1.json

With several recipes the runs are interleaved (seed 0 of each recipe, then seed 1, ...), so that a machine that
gets slower or faster during the run slows both alike, and the summary gives each recipe's times as a ratio to the
first recipe's, per seed. The record is rewritten after every run and runs already in it (same recipe, seed and
machine) are skipped, so a stopped benchmark continues where it stopped.

Each seed trains in a fresh Python process (cold caches, as a reader would run it).
Training seconds run from the first step to the end of the epoch whose test accuracy
crosses the threshold; evaluation time is excluded (it happens after each epoch's
clock stops). Thresholds are checked on plain accuracy and on flip-TTA accuracy. The
record holds hardware, torch version, recipe, seed and the whole history; records of
the same recipe, seed and device are replaced, others kept.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from helpers.cli import parse_settings
from helpers.files import atomic_write_json

THRESHOLDS = (81.37, 85.0, 90.0)


def one_seed(recipe_name: str, seed: int, out: Path, overrides: dict) -> None:
    import torch

    from helpers.data import dataset_label, load_cifar10
    from helpers.device import describe_device, pick_device
    from helpers.mode import reduced_mode
    from helpers.recipes import get_recipe
    from helpers.train import train

    device = pick_device()
    # Like DAWNBench and airbench: train on all 50,000 images and score the test set after every epoch. This
    # measures a recipe; it never chooses one (the recipes' settings are chosen on the validation split).
    recipe = get_recipe(recipe_name, **{"validation": 0.0, **overrides})
    data = load_cifar10(download=False)
    model, history = train(recipe, data=data, seed=seed, device=device, progress=False,
                           callbacks=[lambda h, m: print(_line(h.last), flush=True)])
    record = {
        "recipe": recipe.to_dict(), "seed": seed, "device": describe_device(device), "torch": torch.__version__,
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "data": dataset_label(),
        "reduced_mode": reduced_mode(), "final_test_acc": history.last["test_acc"],
        "final_test_acc_tta": history.last.get("test_acc_tta"), "train_seconds": history.last["train_seconds_total"],
        "time_to": {f"{t:g}": history.time_to(t) for t in THRESHOLDS},
        "time_to_tta": {f"{t:g}": history.time_to(t, "test_acc_tta") for t in THRESHOLDS} if recipe.tta else None,
        "history": list(history),
    }
    atomic_write_json(out, record)


def _line(row: dict) -> str:
    tta = f" tta {row['test_acc_tta']:.2f}" if "test_acc_tta" in row else ""
    return f"  epoch {row['epoch']:>2}  train {row['train_seconds_total']:7.1f} s  test {row['test_acc']:.2f}{tta}"


def summarize(records: list[dict]) -> str:
    lines = [f"{len(records)} run(s): {records[0]['device']} | {records[0]['data']}"]
    for key, label in (("final_test_acc", "final test acc"), ("final_test_acc_tta", "final flip-TTA acc"),
                       ("train_seconds", "training seconds")):
        values = [r[key] for r in records if r.get(key) is not None]
        if values:
            spread = f" (min {min(values):.2f}, max {max(values):.2f})" if len(values) > 1 else ""
            lines.append(f"  {label:20s} median {statistics.median(values):8.2f}{spread}")
    for table in ("time_to", "time_to_tta"):
        for t in THRESHOLDS:
            values = [r[table][f"{t:g}"] for r in records if r.get(table)]
            reached = [v for v in values if v is not None]
            if values:
                med = f"median {statistics.median(reached):7.1f} s" if reached else "not reached"
                lines.append(f"  {table:11s} {t:5.2f}%  {med}  ({len(reached)}/{len(values)} seeds reached)")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", nargs="+", default=["cpu"], help="named recipe(s): upstream, cpu, cpu_v1, gpu")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", help="JSON file of records (default: results/time_to_accuracy_<recipe>.json)")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="recipe overrides, e.g. --set epochs=12 lr=0.3 (values parsed as JSON)")
    p.add_argument("--one-seed", type=int, help=argparse.SUPPRESS)
    p.add_argument("--record", help=argparse.SUPPRESS)
    args = p.parse_args()
    overrides = parse_settings(args.set)
    if args.one_seed is not None:
        return one_seed(args.recipe[0], args.one_seed, Path(args.record), overrides)

    out = Path(args.out or f"results/time_to_accuracy_{'_'.join(args.recipe)}.json")
    records = json.loads(out.read_text()) if out.is_file() else []
    machine = _machine()
    for seed in args.seeds:
        for name in args.recipe:
            if any(_run_key(r) == (name, seed, machine) for r in records):
                print(f"recipe {name}, seed {seed}: recorded already on this machine", flush=True)
                continue
            print(f"recipe {name}, seed {seed}: fresh process", flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                record = Path(tmp) / "record.json"
                cmd = [sys.executable, __file__, "--recipe", name, "--one-seed", str(seed), "--record", str(record),
                       "--set", *args.set]
                subprocess.run(cmd, check=True, env=os.environ.copy())
                records.append(json.loads(record.read_text()))
            atomic_write_json(out, records)  # after every run: a stopped benchmark loses at most the run in progress
    for name in args.recipe:
        mine = [r for r in records if _run_key(r)[0] == name and _run_key(r)[2] == machine]
        if mine:
            print(summarize(mine))
    if len(args.recipe) > 1:
        from helpers.results import side_by_side_ratios

        here = [r for r in records if r["device"] == machine]
        print(f"side by side on {machine}: seconds as a ratio to {args.recipe[0]}'s, per seed")
        print(side_by_side_ratios(here, args.recipe).round(2).to_string(index=False))
    print(f"wrote {out}")


def _machine() -> str:
    """This machine as a record's device line says it: runs compare side by side only on the same one."""
    from helpers.device import describe_device, pick_device

    return describe_device(pick_device())


def _run_key(record: dict) -> tuple:
    return record["recipe"]["name"], record["seed"], record["device"]


if __name__ == "__main__":
    main()
