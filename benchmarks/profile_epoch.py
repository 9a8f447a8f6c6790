"""Where a training epoch's time goes: convolutions, fully connected layers, data, optimiser, the rest.

    python benchmarks/profile_epoch.py --recipe cpu [--images 8192] [--set batch_size=512 amp=off]

Runs the engine (`helpers.train.fit`) for one epoch on `--images` training images under
torch.profiler and adds up each operator's own CPU time by category. Prints the table and,
with --out, appends a record (device, torch, recipe, seconds per category) to a JSON list.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# The first pattern that matches an operator's name decides its category.
CATEGORIES = (
    ("convolution", r"conv|mkldnn_convolution"),
    ("fully connected", r"addmm|aten::mm|aten::linear|matmul"),
    ("batch norm", r"batch_norm"),
    ("pooling", r"pool"),
    ("activation", r"relu|gelu|threshold"),
    ("dropout", r"dropout|bernoulli"),
    ("loss", r"cross_entropy|log_softmax|nll_loss|binary_cross"),
    ("optimiser", r"sgd|adam|_foreach|lerp|addcdiv|add_\b|mul_\b"),
    ("data (crop, flip, normalise)", r"index|gather|flip|where|addcmul|randperm|unique|nonzero|masked"),
    ("precision casts and copies", r"\bto\b|_to_copy|copy_|contiguous|clone"),
)


def category(name: str) -> str:
    """The category of an operator name."""
    for label, pattern in CATEGORIES:
        if re.search(pattern, name):
            return label
    return "other"


def profile(recipe_name: str, images: int, overrides: dict) -> dict:
    """One profiled epoch: seconds of each category's own CPU time, the wall time and images/s."""
    import time

    import torch
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from helpers.course import seed_everything
    from helpers.data import load_cifar10
    from helpers.device import describe_device, pick_device
    from helpers.models import build_model
    from helpers.training import fit, get_recipe, recipe_loaders

    device = pick_device()
    recipe = get_recipe(recipe_name, reduced=False, **{"epochs": 1, "train_limit": images, "eval_limit": 500, **overrides})
    loaders = recipe_loaders(recipe, load_cifar10(download=False), device=device)
    seed_everything(0)
    model = build_model(recipe.model, **recipe.model_overrides)
    fit(model, loaders.train, loaders.val, recipe, device=device, progress=False)  # warm-up: kernels, allocator
    seed_everything(0)
    model = build_model(recipe.model, **recipe.model_overrides)
    start = time.perf_counter()
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        history = fit(model, loaders.train, loaders.val, recipe, device=device, progress=False)
    wall = time.perf_counter() - start
    seconds: dict[str, float] = {}
    for event in prof.key_averages():
        seconds[category(event.key)] = seconds.get(category(event.key), 0.0) + event.self_cpu_time_total / 1e6
    return {"recipe": recipe.to_dict(), "device": describe_device(device), "torch": torch.__version__,
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "images": images,
            "train_seconds": history.last["train_seconds"], "images_per_s": history.last["images_per_s"],
            "wall_seconds_with_evaluation": wall, "self_cpu_seconds": dict(sorted(seconds.items(), key=lambda kv: -kv[1]))}


def main() -> None:
    from helpers.commands import parse_settings
    from helpers.plumbing.files import atomic_write_json

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", default="cpu")
    p.add_argument("--images", type=int, default=8192, help="training images in the profiled epoch (default 8192)")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE", help="recipe overrides (values as JSON)")
    p.add_argument("--out", help="JSON list to append the record to")
    args = p.parse_args()
    record = profile(args.recipe, args.images, parse_settings(args.set))
    total = sum(record["self_cpu_seconds"].values())
    print(f"{record['device']} | {args.images} images, {record['images_per_s']:.0f} img/s, "
          f"{record['train_seconds']:.2f} s of training")
    for label, s in record["self_cpu_seconds"].items():
        print(f"  {label:30s} {s:7.2f} s  {100 * s / total:5.1f}%")
    if args.out:
        import json

        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        records = json.loads(out.read_text()) if out.is_file() else []
        atomic_write_json(out, records + [record])
        print(f"appended to {out}")


if __name__ == "__main__":
    main()
