"""Training images/s of several recipes, timed side by side in one run, to compare records made at other hours.

    python benchmarks/throughput.py --recipe upstream cpu --set upstream:amp=bf16 upstream:channels_last=true

A machine's speed varies from hour to hour (and machines of one kind differ), so seconds recorded by
`time_to_accuracy.py` on different days do not compare. This times each recipe's training step (its model, batch,
precision and memory format, on a synthetic batch; helpers.speed.compare_throughput) in turns, `--repeats` times, and
keeps the median images/s of each, all in one process and one hour. The ratio of two recipes' rates is what carries
over; `benchmarks/measured.py` turns it, with each recipe's epochs to a target from its records, into time to
accuracy on this machine. It times the model's step only: data preparation, evaluation and the optimiser's own
kind are left out (SGD for every recipe), which favours a recipe whose data costs more (the upstream's upscaling).

Each call appends one record (device, torch, date, settings, images/s with min and max) to `--out`
(default results/throughput_<device>.json), written atomically.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def parse_sets(items: list[str], recipes: list[str]) -> dict[str, dict]:
    """{recipe: {field: value}} from RECIPE:FIELD=VALUE items (values read as JSON, else as text)."""
    changes: dict[str, dict] = {name: {} for name in recipes}
    for item in items:
        name, sep, assignment = item.partition(":")
        field, eq, value = assignment.partition("=")
        if not sep or not eq or name not in changes:
            raise ValueError(f"--set {item!r}: expected RECIPE:FIELD=VALUE with RECIPE one of {recipes}")
        try:
            changes[name][field] = json.loads(value)
        except json.JSONDecodeError:
            changes[name][field] = value
    return changes


def main() -> int:
    """The command line: 0 when the record is written, 2 on a bad argument or an unreadable --out."""
    from helpers.device import describe_device, pick_device
    from helpers.plumbing.files import atomic_write_text
    from helpers.speed.measure import Setting, compare_throughput
    from helpers.training import get_recipe

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", nargs="+", default=["upstream", "cpu"], help="named recipes to time side by side")
    p.add_argument("--set", nargs="*", default=[], metavar="RECIPE:FIELD=VALUE",
                   help="a recipe override for one recipe, e.g. upstream:amp=bf16")
    p.add_argument("--steps", type=int, default=10, help="timed steps per turn")
    p.add_argument("--repeats", type=int, default=5, help="turns of each recipe (the median is kept)")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args()
    try:
        changes = parse_sets(args.set, args.recipe)
        recipes = [get_recipe(name, reduced=False, **changes[name]) for name in args.recipe]
    except ValueError as err:
        print(f"error: {err}")
        return 2
    device = pick_device()
    out = args.out or REPO / "results" / f"throughput_{device.type}.json"
    try:
        records = json.loads(out.read_text()) if out.exists() else []
        if not isinstance(records, list):
            raise ValueError("not a list of records")
    except (OSError, ValueError) as err:
        print(f"error: {out} cannot be read as a throughput record file ({err}); move it away or pick another --out")
        return 2
    settings = [Setting(r.name, r.model, dict(r.model_overrides), r.batch_size, r.amp, r.channels_last)
                for r in recipes]
    frame = compare_throughput(settings, steps=args.steps, repeats=args.repeats, device=device)
    record = {
        "what": "training-step images/s of each recipe, recipes timed in turns in one process, median of the repeats",
        "device": describe_device(device),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "steps": args.steps, "repeats": args.repeats,
        "recipes": {r.name: {"overrides": changes[r.name], "model": r.model, "model_overrides": dict(r.model_overrides),
                             "batch_size": r.batch_size,
                             "amp": r.amp, "channels_last": r.channels_last,
                             **{k: float(row[k]) for k in ("images_per_s", "images_per_s_min", "images_per_s_max")},
                             "amp_dtype": row["amp_dtype"]}
                    for r, row in zip(recipes, frame.to_dict("records"))},
    }
    atomic_write_text(out, json.dumps([*records, record], indent=1) + "\n")
    for name, r in record["recipes"].items():
        print(f"{name}: {r['images_per_s']:,.1f} images/s (min {r['images_per_s_min']:,.1f}, "
              f"max {r['images_per_s_max']:,.1f}; {r['amp_dtype']}, batch {r['batch_size']})")
    print(f"{record['device']} -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
