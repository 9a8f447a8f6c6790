"""The search for a faster `cpu` recipe: each idea is one change to a base recipe, trained and judged on validation.

    python benchmarks/recipe_search.py --list
    python benchmarks/recipe_search.py --ideas base epochs_8 batch_512 --seeds 0 [--out results/cpu_recipe_search.json]

Every run trains on the 45,000-image train split and records the validation accuracy after each epoch and the
training seconds; the test set is never looked at here (the time-to-accuracy benchmark reports it for the recipe
finally chosen). Runs already in the output file are skipped, and the file is rewritten atomically after each run,
so a stopped search continues where it stopped. Seconds measured while the machine did other work are not
comparable: the record keeps the machine's load average beside them.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Each idea changes the base (the `cpu` recipe cut to BASE_EPOCHS) in one way; name -> recipe fields.
BASE_EPOCHS = 6
IDEAS = {
    "base": {},
    "epochs_8": {"epochs": 8},
    "epochs_4": {"epochs": 4},
    "batch_512": {"batch_size": 512, "lr": 0.4},
    "batch_128": {"batch_size": 128, "lr": 0.1},
    "lr_0.4": {"lr": 0.4},
    "lr_0.1": {"lr": 0.1},
    "warmup_0.15": {"warmup": 0.15},
    "smoothing_0.2": {"label_smoothing": 0.2},
    "no_dropout": {"model_overrides": {"dropout": 0.0}},
    "width_0.75": {"model_overrides": {"width": 0.75}},
    "width_1.5": {"model_overrides": {"width": 1.5}},
    "fc_512": {"model_overrides": {"fc_size": 512}},
    "wd_1e-3": {"weight_decay": 1e-3},
    "fp32": {"amp": "off"},
    # No dropout won at 6 epochs (it underfits a schedule this short); how many epochs does it need for 85%?
    "no_dropout_10": {"epochs": 10, "model_overrides": {"dropout": 0.0}},
    # Cheaper networks, to buy more epochs in the same seconds: conv3..5 at 4x4 instead of 8x8 (about half the
    # FLOPs), or a stride-2 5x5 first conv in place of conv1's pooling (the paper's stem is a strided 11x11 conv).
    "pools_012": {"model_overrides": {"pool_after": [0, 1, 2]}},
    "stem_stride2": {"model_overrides": {"conv_kernels": [5, 3, 3, 3, 3], "conv_strides": [2, 1, 1, 1, 1],
                                         "pool_after": [1, 4]}},
}


def idea_recipe(name: str):
    """The base recipe with idea `name`'s change."""
    from helpers.plumbing.checks import lookup
    from helpers.training import get_recipe

    return get_recipe("cpu", reduced=False, **{"epochs": BASE_EPOCHS, "validation": 0.1, **lookup("idea", name, IDEAS)})


def key(name: str, seed: int, recipe) -> str:
    text = json.dumps([name, seed, recipe.to_dict()], sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def run_idea(name: str, seed: int, data) -> dict:
    """Train one idea for one seed; the record holds the per-epoch validation accuracy and seconds."""
    import torch

    from helpers.device import describe_device, pick_device
    from helpers.training import train

    recipe = idea_recipe(name)
    device = pick_device()
    _, history = train(recipe, data=data, seed=seed, device=device, progress=False)
    return {"idea": name, "change": IDEAS[name], "seed": seed, "key": key(name, seed, recipe), "recipe": recipe.to_dict(),
            "device": describe_device(device), "torch": torch.__version__, "load_average": os.getloadavg(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "val_acc": history.last["val_acc"], "val_acc_tta": history.last.get("val_acc_tta"),
            "train_seconds": history.last["train_seconds_total"],
            "history": [{k: row[k] for k in ("epoch", "val_acc", "val_acc_tta", "train_seconds_total", "images_per_s")
                         if k in row} for row in history]}


def main() -> None:
    from helpers.data import load_cifar10
    from helpers.plumbing.files import atomic_write_json

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ideas", nargs="+", default=list(IDEAS), help="ideas to run (default: all)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", default=str(REPO / "results" / "cpu_recipe_search.json"))
    p.add_argument("--list", action="store_true", help="print the ideas and exit")
    args = p.parse_args()
    if args.list:
        for name, change in IDEAS.items():
            print(f"{name:16s} {change or f'the cpu recipe at {BASE_EPOCHS} epochs'}")
        return
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    records = json.loads(out.read_text()) if out.is_file() else []
    done = {r["key"] for r in records}
    data = load_cifar10(download=False)
    for seed in args.seeds:
        for name in args.ideas:
            if key(name, seed, idea_recipe(name)) in done:
                continue
            record = run_idea(name, seed, data)
            records.append(record)
            atomic_write_json(out, records)
            print(f"{name:16s} seed {seed}: validation {record['val_acc']:.2f}% (flip-TTA {record['val_acc_tta']:.2f}%) "
                  f"after {record['train_seconds']:.0f} s, load {record['load_average'][0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
