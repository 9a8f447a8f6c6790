"""Time-to-accuracy of named recipes: training seconds until test accuracy first crosses 81.37% (the upstream
repository's reported accuracy), 85%, 88% and 90%.

    python benchmarks/time_to_accuracy.py --recipe cpu --seeds 0 1 2 [--out results/time_to_accuracy_cpu.json]
    python benchmarks/time_to_accuracy.py --recipe cpu_v1 cpu --seeds 0 1 2 --out results/time_to_accuracy_cpu_vs_v1.json

With several recipes the runs are interleaved (seed 0 of each recipe, then seed 1, ...), so that a machine that
gets slower or faster during the run slows both alike, and the summary gives each recipe's times as a ratio to the
first recipe's, per seed.

Nothing is lost to a stop: every run checkpoints after each epoch (in runs/time_to_accuracy/, outside git) and
rewrites its record in the results file with "complete": false, so a stopped benchmark, run again with the same
command, continues the run in progress from its last epoch, bit for bit, and skips the runs already complete. A run
is the same run only if everything that changes its result is the same: the whole recipe (overrides and reduced
mode included), the seed, the machine and the data.

Each seed trains in a fresh Python process (cold caches, as a reader would run it).
Training seconds run from the first step to the end of the epoch whose test accuracy
crosses the threshold; evaluation time is excluded (it happens after each epoch's
clock stops). Thresholds are checked on plain accuracy and on flip-TTA accuracy. The
record holds hardware, torch version, recipe, seed and the whole history; the record of
the same run (its "key") is replaced, others kept. Every record is checked against the
record schema when the file is read: a file or record this benchmark did not write is
refused by name, with exit code 2.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import statistics
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

from helpers.commands import parse_settings
from helpers.plumbing.files import atomic_write_json
from helpers.training.engine import History
from helpers.training.recipes import UPSTREAM_ACCURACY, recorded_fields

THRESHOLDS = (UPSTREAM_ACCURACY, 85.0, 88.0, 90.0)
# Records written before 88% (issue 31's goal) was a threshold hold these; they are read as they are, without one.
_EARLIER_THRESHOLDS = (UPSTREAM_ACCURACY, 85.0, 90.0)
_THRESHOLD_SETS = ({f"{t:g}" for t in THRESHOLDS}, {f"{t:g}" for t in _EARLIER_THRESHOLDS})


def bench_recipe(recipe_name: str, overrides: dict, reduced: bool | None = None):
    """The recipe a benchmark run trains: like DAWNBench and airbench, on all 50,000 images, test set scored every epoch.

    This measures a recipe; it never chooses one (the recipes' settings are chosen on the validation split). `reduced`
    None follows reduced mode (ALEXNET_REDUCED, CI), as a run does; measured.py asks for the full recipe.
    """
    from helpers.training import get_recipe

    return get_recipe(recipe_name, reduced=reduced, **{"validation": 0.0, **overrides})


def one_seed(recipe_name: str, seed: int, out: Path, overrides: dict, checkpoints: Path, stop_after: int | None) -> None:
    import torch

    from helpers.course import reduced_mode
    from helpers.data import load_cifar10
    from helpers.data.cifar10 import dataset_label
    from helpers.device import describe_device, pick_device
    from helpers.training import train

    device = pick_device()
    recipe = bench_recipe(recipe_name, overrides)
    data = load_cifar10(download=False)
    base = {"recipe": recipe.to_dict(), "seed": seed, "device": describe_device(device), "torch": torch.__version__,
            "data": dataset_label(), "reduced_mode": reduced_mode()}
    base["key"] = run_key(base)
    checkpoint = checkpoints / f"{recipe.name}-seed{seed}-{base['key']}.pt"
    _check_checkpoint(checkpoint, base)
    earlier = next((r for r in read_records(out) if r.get("key") == base["key"]), {})
    ends = list(earlier.get("epoch_ended_at", []))

    def write(history, model) -> None:
        print(_line(history.last), flush=True)
        ends[len(history) - 1:] = [datetime.now(timezone.utc).isoformat(timespec="seconds")]
        record = {**base, "date": ends[-1], "complete": len(history) == recipe.epochs, "epochs_done": len(history),
                  "final_test_acc": history.last["test_acc"], "final_test_acc_tta": history.last.get("test_acc_tta"),
                  "train_seconds": history.last["train_seconds_total"],
                  "time_to": {f"{t:g}": history.time_to(t) for t in THRESHOLDS},
                  "time_to_tta": {f"{t:g}": history.time_to(t, "test_acc_tta") for t in THRESHOLDS} if recipe.tta else None,
                  "epoch_ended_at": ends, "history": list(history)}
        records = [r for r in read_records(out) if r.get("key") != base["key"]]
        atomic_write_json(out, [*records, record])  # after every epoch: a stop loses at most the epoch in progress

    if checkpoint.is_file():
        print(f"  continuing from {checkpoint}", flush=True)
    checkpoints.mkdir(parents=True, exist_ok=True)  # the checkpoint writer never creates a folder that is missing
    _, history = train(recipe, data=data, seed=seed, device=device, progress=False, checkpoint=checkpoint, resume=True,
                       callbacks=[write], stop_after=stop_after)
    if len(history) == recipe.epochs:
        checkpoint.unlink(missing_ok=True)  # the record is complete; the checkpoint would only take disk space


def run_key(record: dict) -> str:
    """A short hash of everything that changes a run's result: recipe (overrides, reduced mode), seed, machine, data."""
    fields = {k: record.get(k) for k in ("recipe", "seed", "device", "data", "reduced_mode")}
    fields["recipe"] = recorded_fields(fields["recipe"])  # a renamed recipe field keeps the key of recorded runs
    return hashlib.sha1(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:12]


def read_records(out: Path) -> list[dict]:
    """The records of a results file, [] if there is none; a file or record that is not a benchmark's is refused by name."""
    if not out.exists():
        return []
    try:
        data = json.loads(out.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{out} cannot be read as a results file ({err}); move it away or pass another --out") from err
    if not isinstance(data, list):
        raise ValueError(f"{out} holds a JSON {type(data).__name__}, not a list of time-to-accuracy records; move it "
                         f"away or pass another --out")
    bad = [f"record {i}{_which(r)} {', '.join(problems[:4])}{' and more' if len(problems) > 4 else ''}"
           for i, r in enumerate(data) if (problems := record_problems(r))]
    if bad:
        raise ValueError(f"{out} holds {len(bad)} record(s) that this benchmark does not write: {'; '.join(bad[:3])}"
                         f"{'; and more' if len(bad) > 3 else ''}. The file was edited or written by something else: "
                         f"remove the records named (a run removed is run again) or move it away and pass another --out")
    records = [{**r, "key": r.get("key") or run_key(r)} for r in data]
    seen: dict[str, int] = {}
    for i, r in enumerate(records):
        j = seen.setdefault(r["key"], i)
        if j != i:
            raise ValueError(f"{out}: records {j} and {i} are the same run (recipe {r['recipe']['name']!r}, seed "
                             f"{r['seed']}, key {r['key']}); the benchmark records each run once: remove one of them")
    return records


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _whole(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _percent(v: object) -> bool:
    return _number(v) and 0 <= v <= 100


def _seconds(v: object) -> bool:
    return _number(v) and v >= 0


def _thresholds(v: object) -> bool:
    return isinstance(v, dict) and set(v) in _THRESHOLD_SETS and all(x is None or _seconds(x) for x in v.values())


def _text(v: object) -> bool:
    return isinstance(v, str) and v != ""


# The record schema, as one_seed writes it. Records made before runs were resumable lack the optional fields.
_REQUIRED = {
    "recipe": ("a recipe object with a 'name' and whole 'epochs'",
               lambda v: isinstance(v, dict) and _text(v.get("name")) and _whole(v.get("epochs")) and v["epochs"] >= 1),
    "seed": ("a whole number", _whole), "device": ("a string", _text), "torch": ("a string", _text),
    "date": ("a string", _text), "data": ("a string", _text), "reduced_mode": ("true or false", lambda v: isinstance(v, bool)),
    "final_test_acc": ("a number from 0 to 100", _percent),
    "final_test_acc_tta": ("a number from 0 to 100 or null", lambda v: v is None or _percent(v)),
    "train_seconds": ("a number >= 0", _seconds),
    "time_to": ("an object of seconds or null per threshold (81.37, 85, 88, 90; earlier records lack 88)", _thresholds),
    "time_to_tta": ("an object of seconds or null per threshold, or null", lambda v: v is None or _thresholds(v)),
    "history": ("a non-empty list of epoch rows", lambda v: isinstance(v, list) and len(v) > 0),
}
_OPTIONAL = {
    "key": ("a string", _text), "complete": ("true or false", lambda v: isinstance(v, bool)),
    "epochs_done": ("a whole number", _whole),
    "epoch_ended_at": ("a list of dates", lambda v: isinstance(v, list) and all(_text(d) for d in v)),
    "note": ("a string", lambda v: isinstance(v, str)),
}
_ROW = {"epoch": _whole, "test_acc": _percent, "train_seconds_total": _seconds}


def record_problems(record: object) -> list[str]:
    """What is wrong with one time-to-accuracy record, each problem naming its field; [] for a record one_seed wrote."""
    if not isinstance(record, dict):
        return [f"is a JSON {type(record).__name__}, not an object"]
    problems = [f"lacks {k!r} ({what})" for k, (what, _) in _REQUIRED.items() if k not in record]
    problems += [f"has {k!r} = {_show(record[k])}, not {what}" for k, (what, test) in {**_REQUIRED, **_OPTIONAL}.items()
                 if k in record and not test(record[k])]
    if problems:
        return problems
    history = record["history"]
    for n, row in enumerate(history):
        wrong = [k for k, test in _ROW.items() if not (isinstance(row, dict) and test(row.get(k)))]
        if wrong or row["epoch"] != n + 1:
            return [f"has history row {n} {_show(row)}, not epoch {n + 1} with {', '.join(_ROW)}"]
    # Fields of the right kinds can still disagree with each other or with the history: a hand-edited or forged record.
    last, epochs, done = history[-1], record["recipe"]["epochs"], len(history)
    derived = {"final_test_acc": last["test_acc"], "final_test_acc_tta": last.get("test_acc_tta"),
               "train_seconds": last["train_seconds_total"], "time_to": _times(history, "test_acc", record["time_to"])}
    if record["time_to_tta"] is not None:
        derived["time_to_tta"] = _times(history, "test_acc_tta", record["time_to_tta"])
    if "epochs_done" in record:
        derived["epochs_done"] = done
    if "key" in record:
        derived["key"] = run_key(record)
    problems = [f"has {k!r} = {_show(record[k])}, but its history says {_show(v)}" for k, v in derived.items()
                if record[k] != v]
    complete = record.get("complete", True)  # records made before runs were resumable are all complete
    if done > epochs or complete != (done == epochs):
        problems.append(f"has {done} epoch(s) of history, 'complete' {_show(complete)}, and a recipe of {epochs} epochs")
    if "epoch_ended_at" in record and len(record["epoch_ended_at"]) != done:
        problems.append(f"has {len(record['epoch_ended_at'])} 'epoch_ended_at' date(s) for {done} epoch(s)")
    return problems


def _times(history: list[dict], key: str, written: dict) -> dict | None:
    """The times to each threshold that `written` (a record's) names, as the history gives them."""
    if not all(_percent(row.get(key)) for row in history):
        return None
    return {t: History(history).time_to(float(t), key) for t in written}


def _which(record: object) -> str:
    """' (recipe 'cpu', seed 0)' for a record that names them, '' otherwise."""
    if not isinstance(record, dict):
        return ""
    recipe = record.get("recipe")
    named = [f"recipe {_show(recipe['name'])}"] if isinstance(recipe, dict) and "name" in recipe else []
    named += [f"seed {_show(record['seed'])}"] if "seed" in record else []
    return f" ({', '.join(named)})" if named else ""


def _show(value: object) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _check_checkpoint(checkpoint: Path, base: dict) -> None:
    """Refuse to continue a checkpoint that another recipe or seed wrote (its name says it is this run's)."""
    if not checkpoint.is_file():
        return
    from helpers.training import load_checkpoint

    state = load_checkpoint(checkpoint)
    if state.get("recipe") != base["recipe"] or state.get("seed") != base["seed"]:
        raise SystemExit(f"error: {checkpoint} holds another run (recipe {state.get('recipe', {}).get('name')!r}, seed "
                         f"{state.get('seed')!r}); delete it to start this run afresh")


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
            values = [r[table][f"{t:g}"] for r in records if r.get(table) and f"{t:g}" in r[table]]
            reached = [v for v in values if v is not None]
            if values:
                med = f"median {statistics.median(reached):7.1f} s" if reached else "not reached"
                lines.append(f"  {table:11s} {t:5.2f}%  {med}  ({len(reached)}/{len(values)} seeds reached)")
    return "\n".join(lines)


def main() -> int:
    """The command line; exit code 0, 2 for a bad input (a results file that is not one, a bad --set), or a run's own."""
    try:
        return _main()
    except ValueError as err:
        print(f"error: {err}", flush=True)
        return 2
    except subprocess.CalledProcessError as err:
        print(f"error: the run's process exited with code {err.returncode} (its output above says why); the same "
              f"command continues from its last checkpoint", flush=True)
        return err.returncode if err.returncode > 0 else 1


def _main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--recipe", nargs="+", default=["cpu"], help="named recipe(s): upstream, cpu, cpu_long, cpu_v1, gpu")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--out", help="JSON file of records (default: results/time_to_accuracy_<recipe>.json)")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="recipe overrides, e.g. --set epochs=12 lr=0.3 (values parsed as JSON)")
    p.add_argument("--checkpoints", default="runs/time_to_accuracy",
                   help="folder of the per-epoch checkpoints a stopped run continues from (default: runs/time_to_accuracy)")
    p.add_argument("--stop-after", type=int, metavar="N",
                   help="train at most N epochs of each run in this call; the same command continues them later")
    p.add_argument("--restart", action="store_true",
                   help="train from epoch 1 a run whose record stopped early and whose checkpoint is lost (the record "
                        "of its epochs is replaced when the first epoch ends)")
    p.add_argument("--one-seed", type=int, help=argparse.SUPPRESS)
    p.add_argument("--record", help=argparse.SUPPRESS)
    args = p.parse_args()
    overrides = parse_settings(args.set)
    if args.one_seed is not None:
        one_seed(args.recipe[0], args.one_seed, Path(args.record), overrides, Path(args.checkpoints), args.stop_after)
        return 0

    from helpers.course import reduced_mode
    from helpers.data.cifar10 import dataset_label
    from helpers.plumbing.files import exclusive_lock

    out = Path(args.out or f"results/time_to_accuracy_{'_'.join(args.recipe)}.json")
    read_records(out)  # a file that is not a results file is refused before anything is created or trained
    recipes = {name: bench_recipe(name, overrides).to_dict() for name in args.recipe}
    out.parent.mkdir(parents=True, exist_ok=True)
    machine, data = _machine(), dataset_label()
    keys: dict[str, set[str]] = {name: set() for name in args.recipe}  # this command's runs, for its summary
    with exclusive_lock(out.with_name(f".{out.name}.lock"), f"the results file {out} (another benchmark writes it)"):
        for seed in args.seeds:
            for name in args.recipe:
                mine = {"recipe": recipes[name], "seed": seed, "device": machine, "data": data,
                        "reduced_mode": reduced_mode()}
                keys[name].add(run_key(mine))
                done = next((r for r in read_records(out) if r["key"] == run_key(mine)), None)
                if done is not None and done.get("complete", True):
                    print(f"recipe {name}, seed {seed}: recorded already (same settings, machine and data)", flush=True)
                    continue
                if done is not None:
                    lost = Path(args.checkpoints) / f"{recipes[name]['name']}-seed{seed}-{done['key']}.pt"
                    if not lost.is_file() and not args.restart:
                        raise ValueError(
                            f"recipe {name}, seed {seed}: its record in {out} stops after epoch {done['epochs_done']} "
                            f"of {recipes[name]['epochs']}, but the checkpoint to continue it from, {lost}, is missing "
                            f"(lost with a machine, or --checkpoints names another folder). Restore the checkpoint, "
                            f"or run again with --restart to train it from epoch 1 (its record is replaced when the "
                            f"first epoch ends)")
                    if not lost.is_file():
                        print(f"recipe {name}, seed {seed}: --restart: its checkpoint is lost, training from epoch 1; "
                              f"the record of the {done['epochs_done']} epochs done is replaced when the first ends",
                              flush=True)
                print(f"recipe {name}, seed {seed}: fresh process", flush=True)
                # The child rewrites `out` after every epoch; this process holds the lock for it.
                cmd = [sys.executable, __file__, "--recipe", name, "--one-seed", str(seed), "--record", str(out),
                       "--checkpoints", args.checkpoints, "--set", *args.set]
                if args.stop_after is not None:
                    cmd += ["--stop-after", str(args.stop_after)]
                subprocess.run(cmd, check=True, env=os.environ.copy())
        records = read_records(out)
    # Only this command's runs: a reduced or overridden run of the same recipe is another run, never its result.
    here = [r for r in records if r.get("complete", True) and any(r["key"] in k for k in keys.values())]
    for name in args.recipe:
        mine = [r for r in here if r["key"] in keys[name]]
        if mine:
            print(summarize(mine))
    if len(args.recipe) > 1:
        from helpers.speed import side_by_side_ratios

        print(f"side by side on {machine}: seconds as a ratio to {args.recipe[0]}'s, per seed")
        print(side_by_side_ratios(here, args.recipe).round(2).to_string(index=False))
    print(f"wrote {out}")
    return 0


def _machine() -> str:
    """This machine as a record's device line says it: runs compare side by side only on the same one."""
    from helpers.device import describe_device, pick_device

    return describe_device(pick_device())


if __name__ == "__main__":
    sys.exit(main())
