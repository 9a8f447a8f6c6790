"""Recorded results in results/: the time-to-accuracy benchmark's runs, the recipe search's log, their tables and charts."""

from __future__ import annotations

import json
import math
import os
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib.pyplot as plt

from ..training.recipes import UPSTREAM_ACCURACY

if TYPE_CHECKING:
    import pandas as pd


def benchmark_runs(folder: str | os.PathLike, pattern: str = "time_to_accuracy_*.json") -> dict[str, list[dict]]:
    """Recorded time-to-accuracy runs from folder/pattern: file name -> records with recipe and history (notebook 06).

    Only the benchmark's files by default: their histories score the test set every epoch (other records
    of results/, such as the recipe search's, monitor validation).
    """
    folder = Path(folder)
    found: dict[str, list[dict]] = {}
    if not folder.is_dir():
        return found
    for path in sorted(folder.glob(pattern)):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a file being written, or not a record at all: not a run to show
        records = data if isinstance(data, list) else [data]
        runs = [r for r in records if isinstance(r, dict) and "recipe" in r and isinstance(r.get("history"), list)]
        if runs:
            found[path.name] = runs
    return found


def recipe_name(record: dict) -> str:
    """The recipe's name in a run record, whether the record holds the whole recipe or just its name (notebook 06)."""
    recipe = record["recipe"]  # benchmarks record the whole recipe as a dict; notebook 03 its live run as a plain name
    return recipe["name"] if isinstance(recipe, dict) else recipe


def time_to_accuracy_table(records: Sequence[dict]) -> pd.DataFrame:
    """One row per recorded run: recipe, seed, device, epochs, final accuracy, seconds, time to targets (notebook 06)."""
    import pandas as pd

    rows = []
    for r in records:
        history = r.get("history") or []
        last = history[-1] if history else {}
        row = {"recipe": recipe_name(r), "seed": r.get("seed"), "device": r.get("device"), "epochs": len(history),
               "final test_acc %": last.get("test_acc"), "final flip-TTA %": last.get("test_acc_tta"),
               "train seconds": last.get("train_seconds_total")}
        for target, seconds in (r.get("time_to") or {}).items():
            row[f"s to {target}%"] = seconds
        rows.append(row)
    return pd.DataFrame(rows)


def _machine_of(record: dict) -> str:
    """The processor or GPU named in a record's device line, e.g. "Intel Xeon" (plot_time_to_accuracy)."""
    parts = str(record.get("device", "")).split(" | ")  # "device=cpu | Intel(R) Xeon(R) Processor | torch ... | ..."
    return parts[1].replace("(R)", "").replace(" Processor", "").strip() if len(parts) > 1 else "this machine"


def plot_time_to_accuracy(records: Sequence[dict], targets: Sequence[float] = (UPSTREAM_ACCURACY,),
                          metric: str = "test_acc", title: str = "time to accuracy",
                          colours: dict | None = None) -> plt.Figure:
    """Accuracy (test, or `metric`) against cumulative training seconds, one line per run, with targets (notebook 06).

    With `colours` (a dict, filled as it goes) every run of one recipe on one machine gets one colour and one legend
    entry; pass the same dict to several charts to keep their colours alike.
    """
    records = [r for r in records if r.get("history")]
    if not records:
        raise ValueError("no run with a history to plot")
    _, ax = plt.subplots(figsize=(8, 4.5))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    seen = set()
    for r in records:
        history, recipe = r["history"], recipe_name(r)
        if colours is None:
            colour, label = None, f"{recipe}, seed {r['seed']}" if r.get("seed") is not None else str(recipe)
        else:
            key = f"{recipe} on {_machine_of(r)}"
            colour = colours.setdefault(key, palette[len(colours) % len(palette)])
            label = None if key in seen else key  # one legend entry per colour
            seen.add(key)
        ax.plot([h["train_seconds_total"] for h in history], [h[metric] for h in history], "o-", ms=3, lw=1.2,
                color=colour, label=label)
    for t in targets:
        ax.axhline(t, color="gray", ls="--", lw=1)
        ax.annotate(f"{t}%", (0.01, t), xycoords=("axes fraction", "data"), va="bottom", fontsize=8, color="gray")
    first = min(r["history"][0]["train_seconds_total"] for r in records)
    last = max(r["history"][-1]["train_seconds_total"] for r in records)
    xlabel = "training seconds (evaluation excluded)"
    if first > 0 and last > 100 * first:  # runs of seconds beside runs of hours: only a log axis shows both
        ax.set(xscale="log", xlim=(first / 1.5, last * 1.5))
        xlabel += ", log scale"
    else:
        ax.set_xlim(0, last * 1.05)
    split = "validation" if metric.startswith("val") else "test"
    ax.set(xlabel=xlabel, ylabel=f"{split} accuracy (%)", title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return ax.figure


def recipe_search_table(records: Sequence[dict]) -> pd.DataFrame:
    """The recipe search's log: each idea's change, validation accuracy and difference to the base of its round and seed
    (notebook 06)."""
    import pandas as pd

    reference = {(_round(r), r["seed"]): r["val_acc"] for r in records if r["idea"] == "base"}
    rows = []
    for r in records:
        epochs = len(r.get("history") or []) or r["recipe"]["epochs"]
        base = reference.get((_round(r), r["seed"]))
        rows.append({"round": _round(r), "idea": r["idea"], "change": _change_text(r["change"]) or "-", "seed": r["seed"],
                     "epochs": epochs, "val_acc %": r["val_acc"], "flip-TTA %": r.get("val_acc_tta"),
                     "six-view TTA %": r.get("val_acc_tta6"),
                     "vs base (points)": None if base is None else r["val_acc"] - base})
    return pd.DataFrame(rows)


def search_verdicts(records: Sequence[dict], round: int, effect: float = 1.0) -> str:
    """A Markdown table of one search round: each idea's mean validation gain over its seed's base, and what it means
    with the seeds it has (notebook 06)."""
    runs = [r for r in records if _round(r) == round]
    base = {r["seed"]: r for r in runs if r["idea"] == "base"}
    lines = ["| idea | change | seeds | val_acc gain (points) | flip-TTA gain | six-view TTA gain | s per image vs base | "
             "reading |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for idea in dict.fromkeys(r["idea"] for r in runs if r["idea"] != "base"):
        pairs = [(r, base[r["seed"]]) for r in runs if r["idea"] == idea and r["seed"] in base]
        if not pairs:
            continue
        mean = statistics.mean(r["val_acc"] - b["val_acc"] for r, b in pairs)
        seconds = statistics.median(_epoch_seconds(r) / _epoch_seconds(b) for r, b in pairs)
        size = "a gain" if mean >= effect else "a loss" if mean <= -effect else "within noise"
        per_seed = ", ".join(f"seed {r['seed']}: {r['val_acc'] - b['val_acc']:+.2f}" for r, b in pairs)
        reading = (f"{size} at one seed: a screen, not a finding" if len(pairs) == 1
                   else f"{size} over {len(pairs)} seeds ({per_seed})")
        cost = "-" if math.isnan(seconds) else f"{seconds:.2f}x"
        lines.append(f"| `{idea}` | {_change_text(pairs[0][0]['change'])} | {len(pairs)} | {mean:+.2f} | "
                     f"{_mean_gain(pairs, 'val_acc_tta')} | {_mean_gain(pairs, 'val_acc_tta6')} | {cost} | {reading} |")
    return "\n".join(lines)


def _round(record: dict) -> int:
    """A search record's round: records written before rounds existed are round 1's."""
    return record.get("round", 1)


def _change_text(change: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in change.items())


def _epoch_seconds(record: dict) -> float:
    """Seconds per training image from the median epoch's speed, so that one slowed or paused epoch does not count
    (nan without per-epoch speeds); a run with low-resolution epochs takes the median of each resolution's epochs,
    weighted by how many epochs ran at it."""
    rates = [row.get("images_per_s") for row in record.get("history") or []]
    low = (record.get("recipe") or {}).get("low_res_epochs", 0)
    parts = [[r for r in part if r] for part in (rates[:low], rates[low:])]
    epochs = sum(len(part) for part in parts)
    return sum(len(part) / statistics.median(part) for part in parts if part) / epochs if epochs else math.nan


def _mean_gain(pairs: Sequence[tuple[dict, dict]], key: str) -> str:
    xs = [r[key] - b[key] for r, b in pairs if r.get(key) is not None and b.get(key) is not None]
    return f"{statistics.mean(xs):+.2f}" if xs else "-"


def side_by_side_ratios(records: Sequence[dict], names: Sequence[str],
                        targets: Sequence[str] = (f"{UPSTREAM_ACCURACY:g}", "85")) -> pd.DataFrame:
    """Each recipe's seconds to each target and to its last epoch over the first recipe's, per seed, one machine (notebook 06)."""
    import pandas as pd

    by = {(recipe_name(r), r["seed"], r["device"]): r for r in records}
    rows = []
    for name in names[1:]:
        for what in [*targets, "end"]:
            per_seed = {}
            for (recipe, seed, device), base in by.items():
                other = by.get((name, seed, device))
                if recipe != names[0] or other is None:
                    continue
                a, b = ((r["train_seconds"] if what == "end" else r["time_to"].get(what)) for r in (base, other))
                if a and b:
                    per_seed[seed] = b / a
            if per_seed:
                rows.append({"recipe": name, "versus": names[0], "seconds to": "last epoch" if what == "end" else f"{what}%",
                             "median ratio": statistics.median(per_seed.values()), "seeds": len(per_seed),
                             "per seed": ", ".join(f"{s}: {x:.2f}" for s, x in sorted(per_seed.items()))})
    return pd.DataFrame(rows)


# The recipe fields a training step's speed depends on: a throughput record matches the runs that share them.
_STEP_FIELDS = ("model", "model_overrides", "batch_size", "amp", "channels_last")


def projected_time_to(folder: str | os.PathLike, target: float = UPSTREAM_ACCURACY) -> list[dict]:
    """Per recipe of the latest results/throughput_*.json record: epochs to `target` from its runs, at that rate.

    Seconds recorded on other days do not compare (machines and hours differ); epochs do. Each row: recipe,
    overrides, images/s, seconds per epoch (50,000 x (1 - validation) images), the epochs its runs needed (median
    over seeds, or more than the epochs an unfinished run has done), and the projected seconds (notebook 06, README).
    """
    folder = Path(folder)
    rows: list[dict] = []
    runs = [r for records in benchmark_runs(folder).values() for r in records
            if isinstance(r["recipe"], dict) and not r.get("reduced_mode")]
    for path in sorted(folder.glob("throughput_*.json")):
        records = json.loads(path.read_text())
        if not records:
            continue
        latest = records[-1]
        for name, rate in latest["recipes"].items():
            mine = [r for r in runs if r["recipe"]["name"] == name
                    and all(_same(r["recipe"].get(k), rate.get(k)) for k in _STEP_FIELDS if k in rate)]
            if not mine:
                continue
            epoch_s = round(50_000 * (1 - mine[0]["recipe"].get("validation") or 0)) / rate["images_per_s"]
            reached = [e for e in (_epochs_to(r, target) for r in mine) if e is not None]
            unfinished = [len(r["history"]) for r in mine if _epochs_to(r, target) is None and not r.get("complete", True)]
            epochs = statistics.median(reached) if reached else None
            rows.append({"recipe": name, "overrides": rate.get("overrides", {}), "device": latest["device"],
                         "date": latest["date"], "repeats": latest["repeats"], "images_per_s": rate["images_per_s"],
                         "epoch_s": epoch_s, "seeds": len(reached), "epochs": epochs,
                         "more_than_epochs": None if reached or not unfinished else max(unfinished),
                         "seconds": epochs * epoch_s if reached else None,
                         "more_than_seconds": max(unfinished) * epoch_s if not reached and unfinished else None})
    return rows


def _same(a, b) -> bool:
    # JSON turns tuples into lists and keeps dicts: compare what the record and the recipe hold, not their types
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def _epochs_to(record: dict, target: float) -> int | None:
    return next((h["epoch"] for h in record["history"] if h["test_acc"] >= target), None)
