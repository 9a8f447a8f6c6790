"""Render the README's "Measured" section from the records in results/, so the README always matches them.

    python benchmarks/measured.py [--results results] [--readme README.md]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from time_to_accuracy import bench_recipe, read_records

from helpers.ablation.store import sweep_records
from helpers.speed.records import projected_time_to
from helpers.training.recipes import UPSTREAM_ACCURACY, recorded_fields

START, END = "<!-- MEASURED -->", "<!-- /MEASURED -->"
RECIPES_START, RECIPES_END = "<!-- RECIPES -->", "<!-- /RECIPES -->"

# What each recipe is for: the one column of the recipe table that is prose, not a field of the recipe.
MEANT_FOR = {
    "upstream": "reproducing the upstream repository",
    "cpu": "a laptop / 2-core CPU (chosen on the validation split: [notebook 06](notebooks/06_performance.ipynb), "
           "section 7)",
    "cpu_long": "about ten minutes on a 2-core CPU with native bf16, for a higher accuracy (notebook 06, section 7)",
    "cpu_v1": "the course's first CPU recipe, kept to time old and new side by side",
    "gpu": "one CUDA GPU (**not yet measured on a GPU**)",
}


def _mean_std(values: list[float], fmt: str = ".2f") -> str:
    if not values:
        return "—"
    if len(values) == 1:
        return format(values[0], fmt)
    return f"{statistics.mean(values):{fmt}} ± {statistics.stdev(values):{fmt}}"


def _pm(mean: float, std: float) -> str:
    # One run has no spread (std is NaN): print the mean alone.
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def _median_reached(values: list[float | None]) -> str:
    reached = [v for v in values if v is not None]
    if not reached:
        return "not reached"
    note = "" if len(reached) == len(values) else f" ({len(reached)}/{len(values)} seeds)"
    return f"{statistics.median(reached):.0f} s{note}"


def _cell(text: str) -> str:
    # A device line separates its parts with "|", which would split a Markdown table cell.
    return text.replace(" | ", ", ")


# Fields a recipe gained after runs were recorded, with the value that reproduces what the code did before: until
# `validation` existed (commit 7c7e571) the benchmark trained on all 50,000 images, as validation=0.0 does now.
_PREDATES = {"validation": 0.0}
_ABSENT = object()


def recipe_changes(recipe: dict) -> dict | None:
    """The fields where a record's recipe differs from its named recipe as the benchmark builds it (full mode, no --set).

    {} for the named recipe itself; None when no recipe of that name exists any more. A field absent on one side
    counts as different, except those of _PREDATES.
    """
    try:
        named = recorded_fields(bench_recipe(recipe["name"], {}, reduced=False))
    except ValueError:
        return None
    got = {**_PREDATES, **recorded_fields(recipe)}
    return {k: got.get(k, _ABSENT) for k in sorted(set(named) | set(got)) if got.get(k, _ABSENT) != named.get(k, _ABSENT)}


def recipe_label(recipe: dict) -> str:
    """`name` for the named recipe; with anything else, the overrides that made it, as --set would give them."""
    changes = recipe_changes(recipe)
    if changes is None:
        return f"`{recipe['name']}` (no longer a recipe of the course)"
    if not changes:
        return f"`{recipe['name']}`"
    shown = " ".join(f"{k}={'(not recorded)' if v is _ABSENT else v if isinstance(v, str) else json.dumps(v)}"
                     for k, v in changes.items())
    return _cell(f"`{recipe['name']}` with `--set {shown}`")


def recipe_rows(results: Path) -> list[str]:
    """One table row per recipe, overrides, device and data from the complete full-mode runs of time_to_accuracy_*.json.

    Only a run of exactly the named recipe is that recipe's row; a run with overrides gets a row of its own, labelled
    with them, so it is shown but never taken for the recipe's result.
    """
    rows = []
    for path in sorted(results.glob("time_to_accuracy_*.json")):
        records = [r for r in read_records(path) if not r["reduced_mode"] and r.get("complete", True)]
        by_run: dict[tuple[str, str, str], list[dict]] = {}  # a file may hold several recipes run side by side
        for r in records:
            by_run.setdefault((recipe_label(r["recipe"]), r["device"], r["data"]), []).append(r)
        for (label, device, data), runs in by_run.items():
            r0 = runs[0]
            tta = [r["final_test_acc_tta"] for r in runs if r.get("final_test_acc_tta") is not None]
            to = {t: _median_reached([r["time_to"][t] for r in runs]) for t in ("81.37", "85")}
            if r0.get("time_to_tta"):
                to = {t: f"{to[t]} / {_median_reached([r['time_to_tta'][t] for r in runs])}" for t in to}
            rows.append(
                f"| {label} | {len(runs)} ({', '.join(str(r['seed']) for r in runs)}) "
                f"| {_mean_std([r['final_test_acc'] for r in runs])} | {_mean_std(tta)} "
                f"| {_mean_std([r['train_seconds'] for r in runs], '.0f')} | {to['81.37']} | {to['85']} "
                f"| {_cell(device)}; {data}; {r0['date'][:10]} |"
            )
    return rows


def unfinished_lines(results: Path) -> list[str]:
    """Full-mode runs of time_to_accuracy_*.json that stopped before their last epoch, epoch by epoch, never as a row."""
    lines = []
    for path in sorted(results.glob("time_to_accuracy_*.json")):
        for r in read_records(path):
            if r["reduced_mode"] or r.get("complete", True) or not r.get("history"):
                continue
            history = r["history"]
            epochs = "; ".join(f"{h['epoch']}: {h['test_acc']:.2f} ({h['train_seconds_total']:,.0f} s)" for h in history)
            best = max(history, key=lambda h: h["test_acc"])
            reached = next((h["epoch"] for h in history if h["test_acc"] >= UPSTREAM_ACCURACY), None)
            fastest = min(h["train_seconds"] for h in history)
            lines += [
                f"Unfinished: {recipe_label(r['recipe'])}, seed {r['seed']} ({path.name}), recorded up to epoch "
                f"{history[-1]['epoch']} of {r['recipe']['epochs']}, stopped or still running ({_cell(r['device'])}; "
                f"{r['data']}; {r['date'][:10]}). Test accuracy % after each epoch (cumulative training seconds): {epochs}. Best "
                f"{best['test_acc']:.2f} (epoch {best['epoch']}); {UPSTREAM_ACCURACY:g}% "
                + (f"first reached after epoch {reached}" if reached else "not reached in these epochs")
                + f". The seconds are not a timing of the recipe: the machine did other work meanwhile (its least "
                f"disturbed epoch took {fastest:,.0f} s).",
                "",
            ]
    return lines


def side_by_side_lines(results: Path, target: float = UPSTREAM_ACCURACY) -> list[str]:
    """Time to `target` on one machine in one hour (helpers.speed.projected_time_to), as a table and a ratio."""
    rows = projected_time_to(results, target)
    if len(rows) < 2:
        return []
    t = rows[0]

    def label(row: dict) -> str:
        shown = " ".join(f"{k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in row["overrides"].items())
        return f"`{row['recipe']}`" + (f" with `--set {shown}`" if shown else "")

    def when(row: dict) -> tuple[str, str]:
        if row["epochs"] is not None:
            return f"{row['epochs']:g} (median of {row['seeds']} seeds)", f"{row['seconds']:,.0f} s"
        if row["more_than_epochs"] is not None:
            return f"more than {row['more_than_epochs']} (not reached yet)", f"more than {row['more_than_seconds']:,.0f} s"
        return "never (complete runs)", "—"

    lines = [
        f"Side by side ({_cell(t['device'])}; {t['date'][:10]}; `python benchmarks/throughput.py`, each recipe's "
        f"training step timed in turns, median of {t['repeats']}): images/s of the model step, one epoch of the "
        f"training images at that rate, and time to {target}% projected from the epochs each recipe's records "
        "needed to reach it. Both projections leave out data preparation and evaluation, which cost the upscaled "
        "recipe more.",
        "",
        f"| recipe | images/s | one epoch | epochs to {target}% | time to {target}% here |",
        "| --- | --- | --- | --- | --- |",
        *[f"| {label(r)} | {r['images_per_s']:,.1f} | {r['epoch_s']:,.0f} s | {' | '.join(when(r))} |" for r in rows],
        "",
    ]
    fast = sorted((r for r in rows if r["seconds"] is not None), key=lambda r: r["seconds"])
    slow = [r for r in rows if r["more_than_seconds"] is not None]
    if fast and slow:
        lines += [f"On this machine {label(slow[0])} needs more than {slow[0]['more_than_seconds'] / fast[0]['seconds']:,.0f} "
                  f"times as long as {label(fast[0])} to reach {target}%.", ""]
    elif len(fast) >= 2:
        lines += [f"On this machine {label(fast[1])} needs {fast[1]['seconds'] / fast[0]['seconds']:,.1f} times as long "
                  f"as {label(fast[0])} to reach {target}%.", ""]
    return lines


def recipe_table() -> str:
    """The README's recipe table, written from the recipes and presets themselves (so it cannot disagree with them)."""
    from helpers.models import build_model
    from helpers.models.alexnet import PRESETS
    from helpers.training.recipes import RECIPES

    rows = ["| recipe | model | input | training | meant for |", "| --- | --- | --- | --- | --- |"]
    for name, r in RECIPES.items():
        config = PRESETS[r.model]
        dropout = r.model_overrides.get("dropout", config.dropout)
        params = sum(p.numel() for p in build_model(r.model, **r.model_overrides).parameters())
        model = (f"`{r.model}`: {len(config.conv_channels)} conv ({'-'.join(map(str, config.conv_channels))}), "
                 f"{config.fc_layers} FC ({config.fc_size} wide), {config.norm} norm, "
                 f"{'no dropout' if not dropout else f'dropout {dropout}'}; {params / 1e6:.2f} M params")
        size = config.input_size
        optimizer = (f"Adam {r.lr:g}, betas {r.betas}" if r.optimizer == "adam" else
                     f"SGD{' Nesterov' if r.nesterov else ''} {r.lr:g}, momentum {r.momentum:g}")
        training = (f"{optimizer}, weight decay {r.weight_decay:g}, {r.schedule} schedule, batch {r.batch_size}, "
                    f"{r.loss} loss" + (f", label smoothing {r.label_smoothing:g}" if r.label_smoothing else "")
                    + f", {'crop + flip' if r.augment else 'no augmentation'}, precision {r.amp}, {r.epochs} epochs")
        rows.append(f"| `{name}` | {model} | {size}×{size}{' (upscaled)' if size != 32 else ''} | {training} "
                    f"| {MEANT_FOR.get(name, '')} |")
    return "\n".join([RECIPES_START, "", *rows, "", RECIPES_END])


def data_lines(results: Path) -> list[str]:
    """Lines on the data pipeline from results/bench_data_*.json."""
    lines = []
    for path in sorted(results.glob("bench_data_*.json")):
        r = json.loads(path.read_text())
        loaders = r["loaders"]
        lines += [
            f"Data pipeline ({_cell(r['device'])}; {r['data']}; {r['date'][:10]}; `python benchmarks/bench_data.py`, "
            f"medians of {r['repeats']}; classic DataLoaders with {r['classic_workers']} worker processes):",
            "",
            f"- loading both splits: first load {r['first_load_s']:.2f} s (parsing the batches), "
            f"cached load {r['cached_load_s']:.2f} s;",
        ]
        for name, label in (("gpu_resident_32_augmented", "GPU-resident loader, 32×32, shuffle + crop + flip"),
                            ("classic_32", "classic DataLoader, 32×32, PIL crop + flip"),
                            ("classic_resize_227", "classic DataLoader with the upstream repository's Resize(227)")):
            if name in loaders:
                lines.append(f"- {label}: {loaders[name]['images_per_s']:,.0f} images/s ({loaders[name]['images']:,} images);")
        lines.append("")
    return lines


def ablation_lines(results: Path) -> list[str]:
    """Notebook 05's sweep from results/ablations.json: one row per variant, verdicts on validation, test beside it."""
    from helpers.ablation import GROUPS, summarize_sweep

    records = [r for r in sweep_records(results / "ablations.json") if not r.get("reduced")]
    table = summarize_sweep(records) if records else None
    if table is None or table.empty:
        return []
    r0, dates = records[0], sorted(r["date"][:10] for r in records)
    bad = sum(r["status"] != "ok" for r in records)
    lines = [
        f"Ablations ([notebook 05](notebooks/05_ablations.ipynb); `python -m helpers.ablation --full --seeds 0 1 2`): "
        f"{len(records)} runs ({bad} collapsed or diverged), each variant one change of the `cpu` recipe at "
        f"{r0['epochs']} epochs on {r0['train_images']:,} training images. Validation accuracy ({r0['val_images']:,} "
        f"images), mean ± std over seeds; Δ: the paired difference to the reference over the same seeds, with its 95% "
        f"t-interval, on which the verdict is made; test accuracy ({r0['test_images']:,} images) reported, never used to "
        f"choose. {'; '.join(sorted({_cell(r['device']) for r in records}))}; "
        f"{'; '.join(sorted({r.get('data', 'data not recorded') for r in records}))}; {dates[0]} to {dates[-1]}.",
        "",
        "| group | variant | compared with | runs | val acc % | Δ val (95% interval) | verdict | test acc % |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    shown = set()
    for row in table.itertuples():
        if row.verdict == "reference" and row.variant in shown:
            continue  # the baseline anchors most groups: one row is enough
        shown.add(row.variant)
        runs = f"{row.runs}" + "".join(f", {n} {kind}" for n, kind in ((row.collapsed, "collapsed"),
                                                                        (row.diverged, "diverged")) if n)
        reference = "—" if row.verdict == "reference" else f"`{GROUPS[row.group].reference}`"
        delta = ("—" if row.verdict == "reference" else
                 f"{row.delta:+.2f} ({row.delta_low:+.2f} to {row.delta_high:+.2f})" if row.paired_seeds > 1 else
                 f"{row.delta:+.2f}")
        lines.append(f"| {GROUPS[row.group].title} | `{row.variant}` ({row.label}) | {reference} | {runs} "
                     f"| {_pm(row.val_acc_mean, row.val_acc_std)} | {delta} | {row.verdict} "
                     f"| {_pm(row.test_acc_mean, row.test_acc_std)} |")
    return [*lines, ""]


def section(results: Path) -> str:
    """The whole Measured section as Markdown."""
    rows = recipe_rows(results)
    lines = [START, ""]
    if rows:
        lines += [
            "Accuracy on the 10,000 test images after the last epoch, mean ± std over seeds; training seconds exclude "
            "evaluation; time-to-accuracy is the median over seeds of the training seconds until the end of the first epoch "
            "whose test accuracy reaches the target, plain / with flip-TTA "
            "(`python benchmarks/time_to_accuracy.py --recipe NAME --seeds 0 1 2`).",
            "",
            "| recipe | seeds | test acc % | flip-TTA acc % | training s | to 81.37% | to 85% | hardware; data; date |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
            "| upstream repository, as reported | — | 81.37 | — | — | — | — | its own GPU, official CIFAR-10 |",
            *rows,
            "",
        ]
    lines += unfinished_lines(results)
    lines += side_by_side_lines(results)
    lines += ablation_lines(results)
    lines += data_lines(results)
    if not rows:
        lines += ["No recipe records yet: run `python benchmarks/time_to_accuracy.py`.", ""]
    lines.append(END)
    return "\n".join(lines)


def _replace_block(text: str, start: str, end: str, block: str, readme: Path) -> str:
    if start not in text:
        raise ValueError(f"{readme} has no {start} marker to write under")
    head, rest = text.split(start, 1)
    tail = rest.split(end, 1)[1] if end in rest else rest
    return head + block + tail


def write_readme_section(readme: Path, results: Path) -> None:
    """Replace the Measured section and the recipe table of a README (between their markers) with rendered ones."""
    text = _replace_block(readme.read_text(), START, END, section(results), readme)
    if RECIPES_START in text:
        text = _replace_block(text, RECIPES_START, RECIPES_END, recipe_table(), readme)
    readme.write_text(text)


def main() -> int:
    """The command line: exit code 0, or 2 when a results file or the README cannot be read."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results", default="results")
    p.add_argument("--readme", default="README.md")
    args = p.parse_args()
    try:
        write_readme_section(Path(args.readme), Path(args.results))
    except (ValueError, OSError) as err:  # a results file that is not one: named, and the README left as it was
        print(f"error: {err}")
        return 2
    print(f"updated {args.readme} from {args.results}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
