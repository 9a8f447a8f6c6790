"""The course's two commands, each a thin layer of arguments over the library:

    python -m helpers.train --recipe cpu         trains a recipe into a run folder (helpers/train.py)
    python -m helpers.ablation --full            runs the ablation sweep (helpers/ablation/__main__.py)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import typing
from collections.abc import Iterable, Sequence
from functools import partial
from pathlib import Path

import torch

from .ablation import GROUPS, VARIANTS, groups_for_device, run_sweep, select_variants
from .ablation.report import summarize_sweep
from .ablation.runner import plan_runs
from .ablation.spec import SLOW_ON_CPU_GROUPS, SWEEP_EPOCHS
from .ablation.store import default_output, merge_shards, parse_shard, read_sweep_file, shard_output, split_shard
from .course import REDUCED, is_full, mode_banner
from .data import load_cifar10
from .data.cifar10 import CIFAR10Error, dataset_label
from .device import describe_device, pick_device
from .plumbing.checks import TrainingError, at_least
from .plumbing.files import atomic_write_json, check_output_file, exclusive_lock
from .training import distributed as dist
from .training import runs, train
from .training.engine import check_split
from .training.recipes import CHOICES, FIELD_HELP, RECIPES, Recipe, get_recipe, recipe_for_device

# Fields that are not flags of their own: the name comes with --recipe, model knobs with --set model.KNOB=V.
_NOT_FLAGS = ("name", "model_overrides")
_FLAG_FIELDS = [f.name for f in dataclasses.fields(Recipe) if f.name not in _NOT_FLAGS]
_MODEL_FLAGS = {"norm": (str, "normalisation after each conv layer: none, lrn, batch"),
               "dropout": (float, "dropout before each hidden Linear layer (0 for none)"),
               "width": (float, "multiplier on the conv channel widths"),
               "num_conv": (int, "number of conv layers, 3..5")}


def _add_recipe_flags(p: argparse.ArgumentParser) -> None:
    hints = typing.get_type_hints(Recipe)
    group = p.add_argument_group("recipe fields (default: the recipe's own)")
    for name in _FLAG_FIELDS:
        flag, kind = "--" + name.replace("_", "-"), hints[name]
        if kind is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=FIELD_HELP[name])
        elif typing.get_origin(kind) is tuple:
            group.add_argument(flag, type=float, nargs=len(typing.get_args(kind)), help=FIELD_HELP[name])
        else:
            scalar = next(t for t in (int, float, str) if kind is t or t in typing.get_args(kind))
            group.add_argument(flag, type=scalar, choices=CHOICES.get(name), help=FIELD_HELP[name])
    for knob, (kind, text) in _MODEL_FLAGS.items():
        p.add_argument("--" + knob.replace("_", "-"), type=kind, help=f"model knob: {text}")
    p.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="any recipe field, or model.KNOB for a model knob, e.g. --set lr=0.3 model.norm=lrn "
                        "(values read as JSON, else as text)")


def _build_parser() -> argparse.ArgumentParser:
    """The argument parser of `python -m helpers.train` (README)."""
    p = argparse.ArgumentParser(prog="python -m helpers.train", description=(
        "Train an AlexNet-family model on CIFAR-10 with a named recipe. Writes a run folder with config.json, "
        "history.json/.csv, checkpoint.pt and metrics.json; --resume continues it. Reduced mode (CI=true or "
        "ALEXNET_REDUCED=1) shrinks epochs and data."))
    p.add_argument("--recipe", choices=list(RECIPES), help="named recipe (default: 'gpu' on CUDA, else 'cpu')")
    _add_recipe_flags(p)
    p.add_argument("--seed", type=int, help="random seed (default 0; with --resume, the checkpoint's)")
    p.add_argument("--device", help="cuda, mps or cpu (default: the fastest available)")
    p.add_argument("--data-root", help="folder holding cifar-10-batches-py/ (default: $CIFAR10_ROOT or ./data)")
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data")
    p.add_argument("--run-dir", help="output folder (default: runs/<recipe>-seed<seed>)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint")
    p.add_argument("--stop-after", type=int, metavar="N",
                   help="stop after N epochs of this call (the schedule still spans --epochs); continue with --resume")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def parse_settings(items: Sequence[str]) -> dict:
    """['lr=0.3', 'model.norm=lrn'] -> {'lr': 0.3, 'model.norm': 'lrn'}: values read as JSON, else as text (README)."""
    out = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r} is not of the form FIELD=VALUE, e.g. --set lr=0.3")
        try:
            out[key] = json.loads(text)
        except json.JSONDecodeError:
            out[key] = text
    return out


def _recipe_from_args(args: argparse.Namespace, device_type: str) -> Recipe:
    """The recipe the flags ask for: the named recipe with every given field and model knob changed (README)."""
    fields = {f: getattr(args, f) for f in _FLAG_FIELDS if getattr(args, f, None) is not None}
    if fields.get("betas") is not None:
        fields["betas"] = tuple(fields["betas"])
    knobs = {k: getattr(args, k) for k in _MODEL_FLAGS if getattr(args, k) is not None}
    for key, value in parse_settings(args.set).items():
        target, field, flag = (knobs, key.removeprefix("model."), "--" + key.removeprefix("model.")) if key.startswith("model.") \
            else (fields, key, "--" + key)
        if field in target and target[field] != value:  # a flag and a --set of one field must not disagree silently
            raise ValueError(f"{flag.replace('_', '-')} {target[field]!r} and --set {key}={value!r} ask for two values of "
                             f"one setting; give it once")
        target[field] = value
    name = args.recipe or recipe_for_device(device_type)
    if knobs:
        fields["model_overrides"] = {**RECIPES[name].model_overrides, **knobs}
    label = fields.pop("name", None)  # --set name=... labels the run; the recipe it starts from is --recipe
    recipe = get_recipe(name, **fields)
    return recipe if label is None else recipe.replace(name=str(label))


class Terminated(Exception):
    """SIGTERM (a scheduler, `kill`, a CI timeout) arrived: stop like Ctrl-C does, with exit code 143."""


@contextlib.contextmanager
def _stop_on_sigterm():
    """Turn SIGTERM into `Terminated` in the main thread for a `with` block, so a run says where its checkpoint is."""
    def handler(signum, frame):
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread (e.g. called from a notebook's worker): leave signals alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


_STOPPED = {KeyboardInterrupt: ("interrupted", 130), Terminated: ("terminated (SIGTERM)", 143)}


def train_command(argv: Sequence[str] | None = None) -> int:
    """`python -m helpers.train` (README); also under `torchrun`."""
    args = _build_parser().parse_args(argv)
    distributed = dist.launched_by_torchrun()
    try:
        with _stop_on_sigterm():
            return _main(args, distributed)
    finally:
        if distributed:
            dist.close_distributed()


def _explicit(args: argparse.Namespace) -> bool:
    """Whether the command names any setting of the run: a recipe, a field, a model knob, --set or --seed."""
    return (args.recipe is not None or args.seed is not None or bool(args.set)
            or any(getattr(args, name, None) is not None for name in [*_FLAG_FIELDS, *_MODEL_FLAGS]))


def _setup(args: argparse.Namespace, distributed: bool):
    """Every check before anything is written. Returns (device, recipe, seed, run folder, data)."""
    if args.stop_after is not None and args.stop_after < 1:
        raise ValueError(f"--stop-after must be at least 1, got {args.stop_after}")
    if args.seed is not None and not 0 <= args.seed < 2**63:  # torch and NumPy take seeds of at most 64 bits
        raise ValueError(f"--seed must be a whole number from 0 to 2**63 - 1, got {args.seed}")
    device = dist.init_distributed(args.device) if distributed else pick_device(args.device)
    recipe, seed = _recipe_from_args(args, device.type), 0 if args.seed is None else args.seed
    run_dir = Path(args.run_dir or f"runs/{recipe.name}-seed{seed}")
    saved_data = None
    if args.resume:
        recipe, seed, saved_data = runs.resume_settings(run_dir / "checkpoint.pt", recipe, seed, _explicit(args))
    elif (run_dir / "checkpoint.pt").exists():
        raise ValueError(f"{run_dir} already holds a checkpoint; pass --resume to continue it or pick another --run-dir")
    dist.split_batch(recipe.batch_size)  # a batch the processes cannot share fails before any work
    data = load_cifar10(args.data_root, download=not args.no_download) if dist.is_main_process() else None
    dist.barrier()  # the others read what the main process downloaded and cached
    if data is None:
        data = load_cifar10(args.data_root, download=False)
    check_split(recipe, data.train_labels)
    runs.check_same_data(run_dir / "checkpoint.pt", saved_data, getattr(data, "fingerprint", None))
    return device, recipe, seed, run_dir, data


def _main(args: argparse.Namespace, distributed: bool) -> int:
    run_dir = None
    try:
        device, recipe, seed, run_dir, data = _setup(args, distributed)
        if dist.is_main_process():  # one writer per run folder, for the run's whole life
            runs.make_run_dir(run_dir)
            with exclusive_lock(run_dir / ".lock", f"the run folder {run_dir}") as lock:
                runs.prepare_run_dir(run_dir)
                return _run(args, device, recipe, seed, run_dir, data, lock)
        return _run(args, device, recipe, seed, run_dir, data)
    except (ValueError, CIFAR10Error, OSError, TrainingError) as err:
        print(f"error: {err}")
        return 2
    except (KeyboardInterrupt, Terminated) as stop:  # at any moment, also while data or a checkpoint is written
        what, code = _STOPPED[type(stop)]
        saved = runs.last_checkpoint_message(run_dir) if run_dir is not None else "Nothing was written."
        if dist.is_main_process():
            print(f"\n{what}. {saved}")
        return code


def _still_ours(lock) -> None:
    """Before each checkpoint: the run folder is still the one this run locked (not deleted, nor made anew by another)."""
    try:
        lock.check()
    except FileNotFoundError as err:
        raise TrainingError(f"{err}; this run stops") from err


def _run(args: argparse.Namespace, device, recipe: Recipe, seed: int, run_dir: Path, data, lock=None) -> int:
    """Train with every check passed; exit code 0, or 1 (training failed)."""
    main_process = dist.is_main_process()
    say = print if main_process else (lambda *a, **k: None)
    processes = dist.world_size()
    where = describe_device(device) + (f" | {processes} processes ({dist.backend(device)})" if processes > 1 else "")
    banner = runs.resumed_banner(recipe) if args.resume else mode_banner()
    say(f"{where}\n{banner}\nrecipe {recipe.name}: {recipe.to_dict()}")
    run = {"recipe": recipe.to_dict(), "seed": seed, "device": where, "processes": processes,
           "data": {"name": dataset_label(data.root), "fingerprint": getattr(data, "fingerprint", None)}}
    if main_process:
        atomic_write_json(run_dir / "config.json", run)

    def after_epoch(history, model) -> None:
        print(runs.epoch_line(history.last))
        try:
            runs.write_history(run_dir, history)
        except OSError as err:  # e.g. a full disk: the checkpoint of this epoch was written before, and is whole
            raise TrainingError(f"could not write the history in {run_dir} ({err}); the checkpoint after epoch "
                                f"{len(history)} is intact: free some space and continue with --resume") from err

    try:
        _, history = train(recipe, data=data, seed=seed, device=device, checkpoint=run_dir / "checkpoint.pt",
                           resume=args.resume, progress=not args.no_progress, stop_after=args.stop_after,
                           callbacks=[after_epoch], guard=None if lock is None else partial(_still_ours, lock))
    except TrainingError as err:
        print(f"error: {err}")
        return 1
    if len(history) < recipe.epochs:
        say(f"stopped after epoch {len(history)} of {recipe.epochs}; continue with the same command and --resume")
        return 0
    if main_process:
        atomic_write_json(run_dir / "metrics.json", {**history.last, **run, "recipe": recipe.name})
    tta = f" (flip-TTA {history.last['test_acc_tta']:.2f}%)" if "test_acc_tta" in history.last else ""
    say(f"done: test accuracy {history.last['test_acc']:.2f}%{tta} after {history.last['train_seconds_total']:.1f} s "
        f"of training; run folder {run_dir}")
    return 0


def _ablation_parser() -> argparse.ArgumentParser:
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
                           f"{REDUCED['eval_limit']} test images (default: follows ALEXNET_REDUCED/CI)")
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


def ablation_command(argv: Sequence[str] | None = None) -> int:
    """`python -m helpers.ablation` (README)."""
    args = _ablation_parser().parse_args(argv)
    try:
        with _stop_on_sigterm():
            return _ablation(args)
    except (KeyboardInterrupt, Terminated) as stop:
        what, code = _STOPPED[type(stop)]
        print(f"\n{what}. Every finished run is recorded; the run in progress continues from its last epoch when the "
              f"same command is run again.")
        return code


def _ablation(args: argparse.Namespace) -> int:
    if args.list:
        _print_groups()
        return 0
    try:
        shard = parse_shard(args.shard) if args.shard else None
        device = pick_device(args.device)
        if args.groups is None and groups_for_device(device.type) != list(GROUPS):
            args.groups = groups_for_device(device.type)
            print(f"on {device.type}: group(s) {', '.join(SLOW_ON_CPU_GROUPS)} left out by default (hours per run here); "
                  f"name them with --groups to run them")
        variants = select_variants(args.groups)
        full = is_full(args.full)
        at_least("--jobs", args.jobs, 1)
        if args.merge:
            return _print_merge(Path(args.out) if args.out else default_output(full), args.groups)
        if args.jobs > 1:
            return _run_jobs(args, full, shard)
        out = shard_output(args.out, shard) if args.out else default_output(full, shard)
        check_output_file(out, "--out")
        read_sweep_file(out)  # a results file that cannot be one is refused before any data or training
        data = load_cifar10(args.data_root)
    except (ValueError, CIFAR10Error, OSError) as err:
        print(f"error: {err}")
        return 2
    print(describe_device(device))
    print(mode_banner() if args.full is None else ("full-size runs" if full else "reduced (smoke-test) runs"))
    planned = plan_runs(variants, args.seeds, shard)
    print(f"{len(planned)} runs ({len(variants)} variants x {len(args.seeds)} seeds"
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
            env["OMP_NUM_THREADS"] = str(dist.cores_per_process(args.jobs))
        log = shard_output(base, (i, n)).with_suffix(".log")
        log.parent.mkdir(parents=True, exist_ok=True)
        print(f"job {job + 1}/{args.jobs}: shard {i + 1}/{n}"
              f"{f' on GPU {job % gpus}' if gpus else ''} -> {shard_output(base, (i, n)).name} (log {log.name})")
        with open(log, "w") as f:
            procs.append(subprocess.Popen([sys.executable, "-m", "helpers.ablation", *argv, "--shard", f"{i + 1}/{n}"],
                                          stdout=f, stderr=subprocess.STDOUT, env=env))
    try:
        failed = [job + 1 for job, p in enumerate(procs) if p.wait() != 0]
    except BaseException:  # Ctrl-C, SIGTERM: the jobs stop too, each saying where it got to in its log
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            p.wait()
        raise
    code = _print_merge(base, args.groups)
    if failed:
        print(f"error: job(s) {failed} failed; see their .log files beside {base}. Rerun the same command: "
              f"finished runs are kept and skipped")
        return 1
    return code
