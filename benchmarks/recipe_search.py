"""The search for a faster `cpu` recipe: each idea is one change to a base recipe, trained and judged on validation.

    python benchmarks/recipe_search.py --list [--round 1]
    python benchmarks/recipe_search.py --ideas base ema_0.99 whiten --seeds 0 [--round 2] [--out results/cpu_recipe_search.json]

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

# Round 1 changed the first cpu recipe (now cpu_v1) cut to 6 epochs in one way each; its winner (no dropout, 10 epochs)
# became `cpu`. Round 2 (issue 31) changes that `cpu` recipe cut to 6 epochs (about the 150 s budget where the cpu
# recipe was timed, a Xeon with native bf16); its trained models are also scored once with six-view TTA (translate and
# flip, evaluation only, so it costs no training second). round -> (base recipe, epochs, ideas).
ROUNDS = {
    1: ("cpu_v1", 6, {
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
    }),
    2: ("cpu", 6, {
        "base": {},
        # The fast-CIFAR literature's ideas (David Page's ResNet-9 ladder, airbench, hlb-CIFAR10), one at a time.
        "whiten": {"whiten": True},
        "ema_0.99": {"ema": 0.99},
        "flip_alternate": {"flip": "alternate"},
        "smoothing_0.2": {"label_smoothing": 0.2},
        "lookahead_5": {"lookahead": 5},
        "batch_512": {"batch_size": 512, "lr": 0.4},
        "width_0.75": {"model_overrides": {"width": 0.75}},
        "width_1.5": {"model_overrides": {"width": 1.5}},
        # The schedule's length: the cpu recipe's own 10 epochs, and 20 for the 600 s budget.
        "epochs_10": {"epochs": 10},
        "epochs_20": {"epochs": 20},
        # Stacks: the two ideas whose one-seed screens gained most, together.
        "whiten+smoothing_0.2": {"whiten": True, "label_smoothing": 0.2},
        "whiten+smoothing_0.2+epochs_10": {"whiten": True, "label_smoothing": 0.2, "epochs": 10},
        "whiten+smoothing_0.2+epochs_20": {"whiten": True, "label_smoothing": 0.2, "epochs": 20},
        # Low-resolution early epochs (fast.ai's progressive resizing): the first half at 24x24 (0.56x the conv
        # FLOPs) or the first third at 16x16 (0.25x); the model max-pools the smaller feature map to its head's size.
        "low_res_24": {"low_res_epochs": 3, "low_res_size": 24},
        "low_res_16": {"low_res_epochs": 2, "low_res_size": 16},
    }),
    # Round 3: round 2's ideas that gained at both seeds (whiten) or at one (smoothing 0.2, their stack), and the
    # cheaper early epochs, at `cpu`'s own length, where its precision (bf16 autocast) is native: round 2 ran on a CPU
    # without native bf16, in float32.
    3: ("cpu", 10, {
        "base": {},
        "whiten": {"whiten": True},
        "smoothing_0.2": {"label_smoothing": 0.2},
        "whiten+smoothing_0.2": {"whiten": True, "label_smoothing": 0.2},
        "low_res_24": {"low_res_epochs": 5, "low_res_size": 24},
        # Toward the 150 s budget: fewer epochs, or larger steps (the learning rate scaled with the batch).
        "epochs_8": {"epochs": 8},
        "batch_512": {"batch_size": 512, "lr": 0.4},
        # Toward the 600 s budget: the schedule, the one lever that moved accuracy by points in round 2.
        "epochs_20": {"epochs": 20},
    }),
}
ROUND = max(ROUNDS)  # the round a plain call runs


def idea_recipe(name: str, round: int = ROUND):
    """The base recipe of `round` with idea `name`'s change (model overrides merged into the base's)."""
    from helpers.plumbing.checks import lookup
    from helpers.training import get_recipe

    base_name, epochs, ideas = lookup("round", round, ROUNDS)
    base = get_recipe(base_name, reduced=False, epochs=epochs, validation=0.1)
    change = dict(lookup("idea", name, ideas))
    if "model_overrides" in change:
        change["model_overrides"] = {**base.model_overrides, **change["model_overrides"]}
    return base.replace(**change)


# Recipe fields added after round 2's first records: at their default they stay out of a run's key, so that the runs
# recorded before them are still found (and not trained again).
_LATER_FIELDS = ("low_res_epochs", "low_res_size")


def key(name: str, seed: int, recipe, precision: str | None = None) -> str:
    """The run's identity in the log; from round 3 on, the precision it trains in is part of it."""
    default = type(recipe)().to_dict()
    fields = {k: v for k, v in recipe.to_dict().items() if k not in _LATER_FIELDS or v != default[k]}
    text = json.dumps([name, seed, fields] + ([precision] if precision else []), sort_keys=True)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def train_precision(recipe, device) -> str:
    """What the recipe's autocast setting trains in on `device`: bfloat16 where native, else float32 (or float16)."""
    import warnings

    from helpers.device import amp_dtype

    with warnings.catch_warnings():  # the training run itself gives the fallback's warning
        warnings.simplefilter("ignore")
        dtype = amp_dtype(recipe.amp, device)
    return str(dtype or "torch.float32").removeprefix("torch.")


def run_key(name: str, seed: int, round: int, device) -> str:
    """The key a run of idea `name` at `seed` has in the log on `device` (from round 3 on, with its precision)."""
    recipe = idea_recipe(name, round)
    return key(name, seed, recipe, train_precision(recipe, device) if round >= 3 else None)


def run_idea(name: str, seed: int, data, round: int = ROUND) -> dict:
    """Train one idea for one seed; the record holds the per-epoch validation accuracy and seconds."""
    import torch

    from helpers.data.cifar10 import dataset_label
    from helpers.device import describe_device, pick_device
    from helpers.training import evaluate, recipe_loaders, train

    recipe = idea_recipe(name, round)
    device = pick_device()
    precision = train_precision(recipe, device)

    def say(history, _model) -> None:  # one line per epoch, so a long search shows where it is
        row = history.last
        print(f"  {name} seed {seed} epoch {row['epoch']}/{recipe.epochs}: validation {row['val_acc']:.2f}% after "
              f"{row['train_seconds_total']:.0f} s", flush=True)

    model, history = train(recipe, data=data, seed=seed, device=device, progress=False, callbacks=[say])
    six = None
    if round >= 2:  # once, on the trained model: scoring six views every epoch would cost more than the idea
        val = recipe_loaders(recipe, data, device=device, seed=seed).val
        six = evaluate(model, val, recipe.replace(tta_translate=True), device)["val_acc_tta6"]
    return {"idea": name, "round": round, "change": ROUNDS[round][2][name], "seed": seed,
            "key": run_key(name, seed, round, device),
            "recipe": recipe.to_dict(), "device": describe_device(device), "precision": precision,
            "torch": torch.__version__,
            "data": dataset_label(), "load_average": os.getloadavg(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "val_acc": history.last["val_acc"], "val_acc_tta": history.last.get("val_acc_tta"),
            "val_acc_tta6": six,
            "train_seconds": history.last["train_seconds_total"],
            "history": [{k: row[k] for k in ("epoch", "val_acc", "val_acc_tta", "train_seconds_total", "images_per_s")
                         if k in row} for row in history]}


def main() -> None:
    from helpers.data import load_cifar10
    from helpers.plumbing.checks import lookup
    from helpers.plumbing.files import Busy, exclusive_lock

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--round", type=int, default=ROUND, choices=sorted(ROUNDS), help=f"search round (default {ROUND})")
    p.add_argument("--ideas", nargs="+", help="ideas to run (default: all of the round)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--out", default=str(REPO / "results" / "cpu_recipe_search.json"))
    p.add_argument("--list", action="store_true", help="print the round's ideas and exit")
    args = p.parse_args()
    base_name, epochs, ideas = ROUNDS[args.round]
    if args.list:
        for name, change in ideas.items():
            print(f"{name:32s} {change or f'the {base_name} recipe at {epochs} epochs'}")
        return
    names = args.ideas or list(ideas)
    for name in names:
        try:
            lookup("idea", name, ideas)  # a misspelt idea is refused before anything trains
        except ValueError as err:
            p.error(f"{err} (round {args.round}; --list shows them)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with exclusive_lock(out.with_name(f".{out.name}.lock"), f"the search log {out} (another search writes it)"):
            _search(args.round, names, args.seeds, out, load_cifar10(download=False))
    except Busy as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None


def _search(round: int, names: list[str], seeds: list[int], out: Path, data) -> None:
    """Run each (seed, idea) not in the log yet, rewriting the log after each run."""
    from helpers.device import pick_device
    from helpers.plumbing.files import atomic_write_json

    records = json.loads(out.read_text()) if out.is_file() else []
    done = {r["key"] for r in records}
    device = pick_device()
    for seed in seeds:
        for name in names:
            if run_key(name, seed, round, device) in done:
                continue
            record = run_idea(name, seed, data, round)
            records.append(record)
            atomic_write_json(out, records)
            six = f", six-view {record['val_acc_tta6']:.2f}%" if record.get("val_acc_tta6") is not None else ""
            print(f"round {round} {name:16s} seed {seed}: validation {record['val_acc']:.2f}% (flip-TTA "
                  f"{record['val_acc_tta']:.2f}%{six}) after {record['train_seconds']:.0f} s, load "
                  f"{record['load_average'][0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
