#!/usr/bin/env python3
"""Ship the course model with the course: notebook 03's full-mode checkpoint -> helpers/weights/<recipe>.pt + .json card.

    python tools/ship_weights.py [--checkpoint runs/course/checkpoint.pt]

The weights are stored as float16 (half the bytes; the card's accuracies are measured with exactly these weights,
loaded back into a float32 model and scored in float64 on the CPU, so that any x86 machine reproduces them) in a file
`torch.load(weights_only=True)` reads without running code; the card names the file's sha256, which
`helpers.training.pretrained.load_shipped` checks on every load. Refuses a reduced-mode or unfinished run.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from helpers.course import course_checkpoint  # noqa: E402
from helpers.data import load_cifar10, split_validation  # noqa: E402
from helpers.data.cifar10 import dataset_label  # noqa: E402
from helpers.device import describe_device  # noqa: E402
from helpers.models import build_model, config_from_dict  # noqa: E402
from helpers.plumbing.files import atomic_write, atomic_write_json  # noqa: E402
from helpers.training.checkpoint import load_checkpoint  # noqa: E402
from helpers.training.pretrained import SHIPPED, WEIGHTS, exact_accuracy, load_shipped  # noqa: E402
from helpers.training.recipes import get_recipe, recipe_from_dict  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Write the weights and their card; exit 2 when the checkpoint is not a finished full-mode course run."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, default=course_checkpoint())
    args = p.parse_args(argv)
    state = load_checkpoint(args.checkpoint)
    recipe = recipe_from_dict(state["recipe"])
    full = get_recipe(recipe.name, reduced=False)
    if recipe.name not in SHIPPED or recipe != full or len(state["history"]) != recipe.epochs:
        print(f"error: {args.checkpoint} is not a finished full-mode run of a shipped recipe ({', '.join(SHIPPED)}): "
              f"run notebook 03 in full mode first")
        return 2
    model = build_model(config_from_dict(state["model_config"]))
    load_checkpoint(args.checkpoint, model)
    weights = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"model_config": state["model_config"], "weights": weights}, buffer)
    blob = buffer.getvalue()
    stem = SHIPPED[recipe.name]
    WEIGHTS.mkdir(exist_ok=True)
    atomic_write(WEIGHTS / f"{stem}.pt", lambda f: f.write(blob))
    card = {"file": f"{stem}.pt", "sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob), "dtype": "float16",
            "recipe": recipe.to_dict(), "seed": state["seed"],
            "source": f"a full-mode run of the recipe, as notebook 03 trains it ({args.checkpoint})"}
    atomic_write_json(WEIGHTS / f"{stem}.json", {**card, "data": "pending"})  # load_shipped checks the hash first
    shipped = load_shipped(recipe.name)
    data = load_cifar10()
    _, _, val_x, val_y = split_validation(data, recipe.validation)
    card.update(data=dataset_label(data.root), data_fingerprint=getattr(data, "fingerprint", None),
                split=f"{len(data.train_labels) - len(val_y):,} training / {len(val_y):,} validation images, class-stratified, "
                      f"split seed 0 (helpers.data.cifar10.validation_indices); the 10,000 test images never chosen on",
                val_acc=exact_accuracy(shipped, val_x, val_y),
                test_acc=exact_accuracy(shipped, data.test_images, data.test_labels),
                test_acc_tta=exact_accuracy(shipped, data.test_images, data.test_labels, tta=True),
                scored="float64 on the CPU, these float16 weights in a float32 model",
                machine=describe_device("cpu"), torch=torch.__version__,
                date=datetime.now(timezone.utc).date().isoformat())
    atomic_write_json(WEIGHTS / f"{stem}.json", card)
    print(f"wrote {WEIGHTS / card['file']} ({len(blob):,} bytes, sha256 {card['sha256'][:16]}...) and its card: "
          f"validation {card['val_acc']:.2f}%, test {card['test_acc']:.2f}% ({card['test_acc_tta']:.2f}% with flip-TTA)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
