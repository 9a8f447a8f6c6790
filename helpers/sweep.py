"""Running the ablation sweep and storing its records: a resumable runner, a JSON store, shards and parallel jobs."""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from .ablation import (
    GPU_ONLY_GROUPS,
    GROUPS,
    SWEEP_EPOCHS,
    VARIANTS,
    Variant,
    groups_for_device,
    recipe_key,
    select_variants,
    variant_recipe,
)
from .checks import TrainingError, at_least
from .mode import REDUCED, is_full, mode_banner
from .recipes import Recipe
from .sweep_store import (
    check_same_experiment,
    default_output,
    load_records,
    merge_shards,
    parse_shard,
    read_records,
    run_key,
    shard_output,
    split_shard,
    write_records,
)

if TYPE_CHECKING:
    from .data import Cifar10


def plan_runs(variants: Sequence[Variant], seeds: Sequence[int], shard: tuple[int, int] | None = None
              ) -> list[tuple[Variant, int]]:
    """Every (variant, seed) pair, seed-major so each seed's runs finish together; a shard takes every n-th (run_sweep)."""
    if not variants:
        raise ValueError("no variants to run")
    if not seeds:
        raise ValueError("give at least one seed")
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"variant names must be unique, got {names}")
    runs = [(v, int(s)) for s in seeds for v in variants]
    if shard is not None:
        i, n = shard
        if not (isinstance(i, int) and isinstance(n, int) and n >= 1 and 0 <= i < n):
            raise ValueError(f"shard={shard!r} must be (i, n) with 0 <= i < n")
        runs = runs[i::n]
    return runs


def run_sweep(variants: Sequence[Variant] | None = None, seeds: Sequence[int] = (0, 1, 2), out: str | os.PathLike | None = None,
              full: bool | None = None, resume: bool = True, shard: tuple[int, int] | None = None, *,
              data: Cifar10 | None = None, device: torch.device | str | None = None, progress: bool = True,
              train_fn: Callable | None = None) -> list[dict]:
    """Train each variant x seed, appending a record per run to `out`; recorded runs are skipped if `resume` (notebook 05).

    `resume=False` reruns and replaces this sweep's runs; a non-finite loss is recorded as "diverged", not raised.
    """
    from tqdm.auto import tqdm

    from .data import load_cifar10
    from .device import pick_device
    from .files import exclusive_lock

    full = is_full(full)
    runs = plan_runs(list(VARIANTS) if variants is None else list(variants), seeds, shard)
    out = Path(out) if out is not None else default_output(full, shard)
    device = pick_device() if device is None else torch.device(device)
    out.parent.mkdir(parents=True, exist_ok=True)
    # One writer per results file: a second sweep on the same file stops here, naming the first one's process,
    # instead of training the same runs and overwriting its records.
    with exclusive_lock(out.with_name(f".{out.name}.lock"), f"the results file {out} (another sweep writes it)"):
        records = read_records(out)
        planned = {v.name: recipe_key(variant_recipe(v, full)) for v, _ in runs}
        if not resume:  # a fresh start of these variants: their old records go, whatever settings made them
            records = [r for r in records if r["variant"] not in planned]
            write_records(out, records)
        check_same_experiment(out, records, planned)
        done = {run_key(r): r for r in records}
        result: list[dict] = []
        bar = tqdm(runs, desc="ablation runs", unit="run", disable=not progress)
        for variant, seed in bar:
            recipe = variant_recipe(variant, full)
            key = (variant.name, seed, recipe_key(recipe))
            if key not in done:
                bar.set_postfix_str(f"{variant.name} seed {seed}")
                data = load_cifar10() if data is None else data
                # A run checkpoints every epoch (outside git), so a stopped sweep continues it from its last epoch.
                checkpoint = checkpoint_path(out, variant, seed, recipe)
                done[key] = _train_run(variant, seed, recipe, full, data=data, device=device, train_fn=train_fn,
                                       checkpoint=checkpoint)
                records.append(done[key])
                write_records(out, records)
                checkpoint.unlink(missing_ok=True)  # recorded: the checkpoint is no longer needed
            result.append(done[key])
        return result


def checkpoint_path(out: Path, variant: Variant, seed: int, recipe: Recipe) -> Path:
    """Where a run of a sweep writing `out` keeps its per-epoch checkpoint: runs/ablation-checkpoints/, outside git."""
    from .paths import runs_dir

    return runs_dir() / "ablation-checkpoints" / f"{out.stem}-{variant.name}-seed{seed}-{recipe_key(recipe)}.pt"


def recorded_runs(variants: Sequence[Variant], seeds: Sequence[int], out: str | os.PathLike | None = None,
                  full: bool | None = None) -> tuple[list[dict], list[tuple[str, int]]]:
    """Runs of a sweep already in its results file (with today's settings) and the (variant, seed) pairs missing (notebook 05).

    Reads only: nothing is trained, so a notebook can show a recorded sweep without starting hours of work.
    """
    full = is_full(full)
    out = Path(out) if out is not None else default_output(full)
    done = {run_key(r): r for r in load_records(out)}
    found, missing = [], []
    for variant, seed in plan_runs(variants, seeds):
        record = done.get((variant.name, seed, recipe_key(variant_recipe(variant, full))))
        if record is None:
            missing.append((variant.name, seed))
        else:
            found.append(record)
    return found, missing


def estimate_seconds(variant: Variant, records: Sequence[dict], device_line: str) -> tuple[float, str] | None:
    """Training seconds one run of `variant` should take, from recorded runs, and what the estimate rests on (notebook 05).

    Prefers this variant's runs on this kind of machine (`device_line`, `describe_device`), then the baseline's there
    scaled by FLOPs per image, then the same on any machine (saying which). None without a usable record.
    """
    import statistics

    from .ablation import BASELINE

    ok = [r for r in records if r.get("status") == "ok" and r.get("train_seconds")]
    kind = "reduced " if ok and all(r.get("reduced") for r in ok) else ""
    for runs, elsewhere in (([r for r in ok if r["device"] == device_line], False), (ok, True)):
        own = [r for r in runs if r["variant"] == variant.name]
        used = own or [r for r in runs if r["variant"] == BASELINE.name]
        if not used:
            continue
        seconds = statistics.median(r["train_seconds"] for r in used)
        basis = f"median of {len(used)} recorded {kind}run(s) of {used[0]['variant']}"
        if not own:
            ratio = _variant_flops(variant) / used[0]["flops_per_image"]
            seconds *= ratio
            basis += f", scaled by FLOPs per image ({ratio:.2f}x)"
        if elsewhere:
            basis += f", made on {'; '.join(sorted({r['device'] for r in used}))}: this machine may differ"
        return seconds, basis
    return None


def _variant_flops(variant: Variant) -> int:
    """Forward FLOPs per image of a variant's model, the cost its records store."""
    from .architecture import total_flops
    from .models import build_model

    recipe = variant_recipe(variant, full=True)
    return total_flops(build_model(recipe.model, **recipe.model_overrides))


def _run_record(variant: Variant, seed: int, recipe: Recipe, full: bool, data: Cifar10) -> dict:
    """What a run's record says before it trains: the variant, seed, recipe hash, data sizes and model cost."""
    from .architecture import total_flops
    from .data import dataset_label
    from .models import build_model, count_parameters

    model = build_model(recipe.model, **recipe.model_overrides)
    return {"variant": variant.name, "group": variant.group, "label": variant.label, "reference": variant.reference,
            "seed": seed, "config": recipe_key(recipe), "reduced": not full, "status": "ok", "epochs": recipe.epochs,
            **_split_sizes(recipe, data), "data": dataset_label(data.root), "params": count_parameters(model),
            "flops_per_image": total_flops(model)}


def _split_sizes(recipe: Recipe, data: Cifar10) -> dict:
    """How many images a run trains on, chooses on (validation) and reports on (test)."""
    from .data import split_sizes

    return {**split_sizes(recipe.validation, recipe.train_limit, recipe.test_limit, data.train_labels,
                          len(data.test_labels)), "validation": recipe.validation}


# A run that predicts (nearly) one class for everything, or scores no better than guessing, has collapsed: it is
# shown as such and left out of the means, whatever its accuracy.
COLLAPSED_SHARE = 0.5
CHANCE_MARGIN = 2.0  # accuracy points above the 10% of guessing


def _collapse(model, recipe: Recipe, data: Cifar10, device: torch.device, last: dict) -> dict:
    """The share of the most predicted class on the validation images, and status "collapsed" if it dominates."""
    share = None
    if isinstance(model, torch.nn.Module):
        from .loader import recipe_loaders
        from .train import predict

        loaders = recipe_loaders(recipe, data, device=device)
        probs, _ = predict(model, loaders.val or loaders.test, device=device, amp=recipe.amp)
        share = float(probs.argmax(1).bincount(minlength=probs.shape[1]).max()) / len(probs)
    accuracy = last["val_acc"] if "val_acc" in last else last["test_acc"]
    collapsed = (share is not None and share >= COLLAPSED_SHARE) or accuracy < 10.0 + CHANCE_MARGIN
    return {"top_class_share": share, **({"status": "collapsed"} if collapsed else {})}


def _train_run(variant: Variant, seed: int, recipe: Recipe, full: bool, *, data: Cifar10, device: torch.device,
               train_fn: Callable | None, checkpoint: Path | None = None) -> dict:
    """Train one run (continuing its checkpoint, if any) and return its complete record; a TrainingError is "diverged"."""
    from .device import describe_device
    from .train import train

    record = _run_record(variant, seed, recipe, full, data)
    try:
        model, history = (train if train_fn is None else train_fn)(recipe, data=data, seed=seed, device=device,
                                                                    progress=False, checkpoint=checkpoint,
                                                                    resume=checkpoint is not None)
        last = history[-1]
        record.update(_collapse(model, recipe, data, device, last))
        record.update(val_acc=last.get("val_acc"), val_acc_tta=last.get("val_acc_tta"),
                      test_acc=last["test_acc"], test_acc_tta=last.get("test_acc_tta"),
                      train_seconds=last["train_seconds_total"], epochs_done=len(history),
                      images=round(sum(row["images_per_s"] * row["train_seconds"] for row in history)))
    except TrainingError as err:
        record.update(status="diverged", error=str(err), val_acc=None, val_acc_tta=None, test_acc=None,
                      test_acc_tta=None, train_seconds=None, epochs_done=None, images=None)
    record.update(device=describe_device(device), torch=torch.__version__,
                  date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  recipe=recipe.to_dict())
    return record


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m helpers.ablation", description=(
        f"Run the ablation sweep: each variant changes one thing from the baseline (the 'cpu' recipe at 32x32, its "
        f"schedule compressed to {SWEEP_EPOCHS} epochs) and is trained once per seed. Records are appended to a JSON "
        f"file after every run; runs already in the file are skipped, so an interrupted sweep continues where it "
        f"stopped. Full results: python -m helpers.ablation --full --seeds 0 1 2 (about 3 hours on a 2-core CPU)."))
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--full", dest="full", action="store_true", default=None,
                      help=f"full-size runs: {SWEEP_EPOCHS} epochs on the 45,000 training images, verdicts on the "
                           f"5,000 validation images, the 10,000 test images reported")
    mode.add_argument("--reduced", dest="full", action="store_false",
                      help=f"smoke-test runs: {REDUCED['epochs']} epochs, {REDUCED['train_limit']} train / "
                           f"{REDUCED['test_limit']} test images (default: follows ALEXNET_REDUCED/CI)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="seeds to run (default: 0 1 2)")
    p.add_argument("--groups", nargs="+", choices=list(GROUPS), metavar="GROUP",
                   help=f"groups to run (default: all): {', '.join(GROUPS)}")
    p.add_argument("--out", help="results file (default: results/ablations.json in full mode, "
                                 "runs/ablations-reduced.json in reduced mode; shards get their own file)")
    p.add_argument("--shard", help="run only shard i of n (e.g. 1/4): every n-th run, for several machines")
    p.add_argument("--jobs", type=int, default=1,
                   help="run this many sweep processes in parallel on this machine, one GPU each (round robin) or a "
                        "share of the CPU cores each, then merge their files (default 1)")
    p.add_argument("--merge", action="store_true",
                   help="only merge the shard files beside the results file into it, print the summary and exit")
    p.add_argument("--no-resume", action="store_true", help="rerun runs already in the file and replace their records")
    p.add_argument("--device", help="cuda, mps or cpu (default: the fastest available)")
    p.add_argument("--data-root", help="folder holding cifar-10-batches-py/ (default: $CIFAR10_ROOT or ./data)")
    p.add_argument("--list", action="store_true", help="print the groups and variants and exit")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point: `python -m helpers.ablation --help` (README)."""
    from .data import CIFAR10Error, load_cifar10
    from .device import describe_device, pick_device

    args = _parser().parse_args(argv)
    if args.list:
        _print_groups()
        return 0
    try:
        shard = parse_shard(args.shard) if args.shard else None
        device = pick_device(args.device)
        if args.groups is None and groups_for_device(device.type) != list(GROUPS):
            args.groups = groups_for_device(device.type)
            print(f"on {device.type}: GPU-only group(s) {', '.join(GPU_ONLY_GROUPS)} left out; name them with --groups "
                  f"to run them anyway")
        variants = select_variants(args.groups)
        full = is_full(args.full)
        at_least("--jobs", args.jobs, 1)
        if args.merge:
            return _print_merge(Path(args.out) if args.out else default_output(full), args.groups)
        if args.jobs > 1:
            return _run_jobs(args, full, shard)
        out = shard_output(args.out, shard) if args.out else default_output(full, shard)
        read_records(out)  # a results file that cannot be one is refused before any data or training
        data = load_cifar10(args.data_root)
    except (ValueError, CIFAR10Error, OSError) as err:
        print(f"error: {err}")
        return 2
    print(describe_device(device))
    print(mode_banner() if args.full is None else ("full-size runs" if full else "reduced (smoke-test) runs"))
    runs = plan_runs(variants, args.seeds, shard)
    print(f"{len(runs)} runs ({len(variants)} variants x {len(args.seeds)} seeds"
          f"{f', shard {args.shard}' if shard else ''}) -> {out}")
    try:
        records = run_sweep(variants, args.seeds, out, full=full, resume=not args.no_resume, shard=shard, data=data,
                            device=device, progress=not args.no_progress)
    except ValueError as err:
        print(f"error: {err}")
        return 2
    _print_summary(records, args.groups)
    return 0


def _print_groups() -> None:
    for g in GROUPS.values():
        members = ", ".join(f"{v.name} ({v.label})" for v in VARIANTS if v.group == g.name)
        print(f"{g.name:<11} {g.title}: reference {g.reference} ({g.reference_label}) vs {members}")


def _print_summary(records: Sequence[dict], groups: Iterable[str] | None) -> None:
    import pandas as pd

    from .sweep_report import summarize_sweep

    with pd.option_context("display.width", 160, "display.max_columns", 20):
        table = summarize_sweep(records, groups)
        print(table[["group", "label", "runs", "collapsed", "diverged", "val_acc_mean", "val_acc_std", "delta",
                     "delta_low", "delta_high", "verdict"]].round(2).to_string(index=False))


def _print_merge(out: Path, groups: Iterable[str] | None) -> int:
    records = merge_shards(out)
    print(f"merged {len(records)} records into {out}")
    if records:
        _print_summary(records, groups)
    return 0


def _job_argv(args: argparse.Namespace, base: Path, full: bool) -> list[str]:
    """The command-line options every job of `--jobs` shares: all of this command's but --jobs and --shard."""
    argv = ["--seeds", *map(str, args.seeds), "--out", str(base), "--full" if full else "--reduced", "--no-progress"]
    for flag, value in (("--groups", args.groups), ("--data-root", args.data_root), ("--device", args.device)):
        if value:
            argv += [flag, *([value] if isinstance(value, str) else value)]
    if args.no_resume:
        argv.append("--no-resume")
    return argv


def _run_jobs(args: argparse.Namespace, full: bool, shard: tuple[int, int] | None) -> int:
    """Start `--jobs` copies of this command, each on its own shard (and GPU, if any), wait, then merge."""
    from .distributed import cores_per_process

    gpus = torch.cuda.device_count() if args.device in (None, "cuda") else 0
    base = Path(args.out) if args.out else default_output(full)
    argv = _job_argv(args, base, full)
    procs = []
    for job in range(args.jobs):
        i, n = split_shard(shard, job, args.jobs)
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(job % gpus)
        else:  # share the cores instead of every process using all of them
            env["OMP_NUM_THREADS"] = str(cores_per_process(args.jobs))
        log = shard_output(base, (i, n)).with_suffix(".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"job {job + 1}/{args.jobs}: shard {i + 1}/{n}"
              f"{f' on GPU {job % gpus}' if gpus else ''} -> {shard_output(base, (i, n)).name} (log {log.name})")
        with open(log, "w") as f:
            procs.append(subprocess.Popen([sys.executable, "-m", "helpers.ablation", *argv, "--shard", f"{i + 1}/{n}"],
                                          stdout=f, stderr=subprocess.STDOUT, env=env))
    failed = [job + 1 for job, p in enumerate(procs) if p.wait() != 0]
    code = _print_merge(base, args.groups)
    if failed:
        print(f"error: job(s) {failed} failed; see their .log files beside {base}. Rerun the same command: "
              f"finished runs are kept and skipped")
        return 1
    return code
