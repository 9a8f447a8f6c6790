"""Sweep results files: one JSON list of run records per sweep or shard, checked against the record schema on every
read and write, written atomically after every run."""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from ..course import is_full, results_dir, runs_dir
from ..plumbing.files import atomic_write_json, exclusive_lock
from ..training.recipes import recipe_key


def default_output(full: bool | None = None, shard: tuple[int, int] | None = None) -> Path:
    """Where a sweep writes: results/ablations.json in full mode, runs/ablations-reduced.json otherwise (notebook 05)."""
    folder, stem = (results_dir(), "ablations") if is_full(full) else (runs_dir(), "ablations-reduced")
    return shard_output(folder / f"{stem}.json", shard)


def shard_output(path: str | os.PathLike, shard: tuple[int, int] | None) -> Path:
    """The file a shard writes beside `path`: ablations.json -> ablations-shard2of4.json (README, "--shard")."""
    path = Path(path)
    return path if shard is None else path.with_name(f"{path.stem}-shard{shard[0] + 1}of{shard[1]}{path.suffix}")


@contextlib.contextmanager
def results_lock(path: str | os.PathLike) -> Iterator[None]:
    """Hold the one-writer lock of a results file (.NAME.lock beside it) for a `with` block (run_sweep, merge_shards)."""
    path = Path(path)
    with exclusive_lock(path.with_name(f".{path.name}.lock"), f"the results file {path} (another sweep writes it)"):
        yield


def merge_shards(path: str | os.PathLike) -> list[dict]:
    """Write the records of `path` and its shard files into `path` itself, and return them (README, "--merge").

    Every file is read and checked first: records that are not a sweep's, or that mix modes or settings, are refused
    before `path` is touched.
    """
    path = Path(path)
    if path.parent.is_dir():  # with no folder there is nothing to merge, and no lock to take
        with results_lock(path):
            records = sweep_records(path)
            write_records(path, records)
        return records
    return sweep_records(path)


def split_shard(shard: tuple[int, int] | None, job: int, jobs: int) -> tuple[int, int]:
    """Shard `job` of `jobs` inside shard (i, n): runs[i::n][job::jobs] is runs[i + job*n :: n*jobs] (README, "--jobs")."""
    i, n = shard if shard is not None else (0, 1)
    return i + job * n, n * jobs


def read_sweep_file(path: str | os.PathLike) -> list[dict]:
    """Records of one results file; [] if it does not exist, ValueError naming each bad record otherwise (run_sweep)."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a folder; give a results file such as {path / 'ablations.json'}")
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON ({type(err).__name__}: {err}); it is not a sweep results file: "
                         f"move it aside or give another --out") from err
    if not isinstance(data, list):
        raise ValueError(f"{path} holds a JSON {_kind(data)}, not a list of sweep records; it is not a sweep results "
                         f"file: move it aside or give another --out")
    check_records(path, data)
    return data


def check_records(path: str | os.PathLike, records: Sequence, writing: bool = False) -> None:
    """Refuse records that a sweep did not write, or that mix modes, settings or runs in one file, naming each (store)."""
    bad = [f"record {i}{_which(r)} {_first(problems, 4, ', ')}" for i, r in enumerate(records)
           if (problems := record_problems(r))]
    if bad:
        advice = ("only runner.py's _train_run makes a record: report this as a bug" if writing else
                  f"The file was edited, or written by something else: remove the records named (a run removed is run "
                  f"again by the next sweep), or move {path} aside and give another --out")
        raise ValueError(f"{path} {'would hold' if writing else 'holds'} {_count(bad, 'record')} that no sweep writes: "
                         f"{_first(bad, 3, '; ')}. {advice}")
    seen: dict[tuple, int] = {}
    for i, r in enumerate(records):
        j = seen.setdefault(run_key(r), i)
        if j != i:
            raise ValueError(f"{path}: records {j} and {i} are the same run ({r['variant']} seed {r['seed']}, recipe "
                             f"{r['config']}); a sweep records each run once: remove one of them")
    check_one_experiment(records, lambda i: f"record {i} of {path}")


def check_one_experiment(records: Sequence[dict], where: Callable[[int], str]) -> None:
    """Refuse records that mix reduced and full runs, or one variant's runs of two recipes (`where(i)` names record i)."""
    modes = [i for i, r in enumerate(records) if r["reduced"] != records[0]["reduced"]]
    if modes:
        i = modes[0]
        kinds = ("reduced (smoke-test)", "full") if records[i]["reduced"] else ("full", "reduced (smoke-test)")
        raise ValueError(f"{where(i)}{_which(records[i])} is a {kinds[0]} run, {where(0)}{_which(records[0])} a "
                         f"{kinds[1]} one: a results file never mixes them. Keep reduced runs in "
                         f"{default_output(full=False)}, full ones in {default_output(full=True)}")
    configs: dict[str, int] = {}
    for i, r in enumerate(records):
        j = configs.setdefault(r["variant"], i)
        if records[j]["config"] != r["config"]:
            raise ValueError(f"{where(i)}{_which(r)} was made with recipe {r['config']}, {where(j)}{_which(records[j])} "
                             f"with {records[j]['config']}: another budget, split or baseline. A results file holds one "
                             f"experiment: move one of them aside")


def check_mode(path: str | os.PathLike, records: Sequence[dict], full: bool) -> None:
    """Refuse to add runs of one mode to a results file that holds runs of the other (run_sweep, before any training)."""
    other = [i for i, r in enumerate(records) if r["reduced"] == full]
    if other:
        have, want = ("reduced (smoke-test)", "full") if full else ("full", "reduced (smoke-test)")
        raise ValueError(f"{path} holds {len(other)} {have} run(s) (e.g. record {other[0]}{_which(records[other[0]])}); "
                         f"this sweep makes {want} runs, and a results file never mixes them: give another --out (the "
                         f"default for {want} runs is {default_output(full=full)})")


def sweep_records(path: str | os.PathLike) -> list[dict]:
    """Records of a sweep file and its shard files (name-shardIofN.json) beside it, without duplicates (notebook 05)."""
    path = Path(path)
    shards = sorted(path.parent.glob(f"{path.stem}-shard*of*.json")) if path.parent.is_dir() else []
    records: dict[tuple, dict] = {}
    source: list[str] = []
    for p in (path, *shards):
        for i, r in enumerate(read_sweep_file(p)):
            if records.setdefault(run_key(r), r) is r:  # the first copy of a run wins
                source.append(f"record {i} of {p}")
    merged = list(records.values())
    check_one_experiment(merged, source.__getitem__)
    return merged


def write_records(path: str | os.PathLike, records: list[dict]) -> None:
    """Check the records, then write them as JSON atomically: a temp file renamed over the old one (run_sweep, merge_shards)."""
    try:
        check_records(path, records, writing=True)
    except ValueError as err:
        raise ValueError(f"not written, {path} is left as it was: {err}") from err
    atomic_write_json(path, records)


def run_key(record: dict) -> tuple:
    """What identifies a run in a results file: variant, seed and the recipe hash (run_sweep, sweep_records)."""
    return record["variant"], record["seed"], record.get("config")


def parse_shard(text: str) -> tuple[int, int]:
    """'2/4' -> (1, 4): the second of four shards, counted from 1 on the command line (README, "--shard")."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise ValueError(f"shard {text!r} is not of the form i/n, e.g. 1/4")
    i, n = int(match.group(1)), int(match.group(2))
    if not 1 <= i <= n:
        raise ValueError(f"shard {text!r}: i must lie in 1..n")
    return i - 1, n


def check_same_experiment(path: Path, records: Sequence[dict], planned: dict[str, str]) -> None:
    """Refuse a results file whose runs of these variants used other settings (budget, split, recipe) (README)."""
    foreign = [r for r in records if r["variant"] in planned and r.get("config") != planned[r["variant"]]]
    if foreign:
        r = foreign[0]
        raise ValueError(f"{path} holds {len(foreign)} run(s) made with other settings (e.g. {r['variant']} seed {r['seed']}: "
                         f"recipe {r.get('config')}, this sweep's {planned[r['variant']]}: another budget, split or "
                         f"baseline). A sweep never mixes them: move that file aside or write to another --out")


# The record schema: what _run_record and _train_run (runner.py) write, field by field. Each kind is a description,
# for the message, and a test.
_Kind = tuple[str, Callable[[object], bool]]


def _number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _whole(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _or_null(kind: _Kind) -> _Kind:
    return f"{kind[0]} or null", lambda v: v is None or kind[1](v)


_TEXT: _Kind = ("a string", lambda v: isinstance(v, str) and v != "")
_COUNT: _Kind = ("a whole number >= 0", lambda v: _whole(v) and v >= 0)
_POSITIVE: _Kind = ("a whole number >= 1", lambda v: _whole(v) and v >= 1)
_SEED: _Kind = ("a whole number", _whole)
_FLAG: _Kind = ("true or false", lambda v: isinstance(v, bool))
_SECONDS: _Kind = ("a number >= 0", lambda v: _number(v) and v >= 0)
_PERCENT: _Kind = ("a number from 0 to 100", lambda v: _number(v) and 0 <= v <= 100)
_SHARE: _Kind = ("a number from 0 to 1", lambda v: _number(v) and 0 <= v <= 1)
_OBJECT: _Kind = ("a JSON object", lambda v: isinstance(v, dict))
_NULL: _Kind = ("null", lambda v: v is None)
_STATUSES = ("ok", "collapsed", "diverged")

# Every record: what the run was (written before it trains) and where and when it ran.
_ALWAYS: dict[str, _Kind] = {
    "variant": _TEXT, "group": _TEXT, "label": _TEXT, "reference": _TEXT, "seed": _SEED, "config": _TEXT,
    "reduced": _FLAG, "status": (" or ".join(map(repr, _STATUSES)), lambda v: v in _STATUSES), "epochs": _POSITIVE,
    "train_images": _COUNT, "val_images": _COUNT, "test_images": _COUNT, "validation": _SHARE, "params": _COUNT,
    "flops_per_image": _COUNT, "data": _TEXT, "device": _TEXT, "torch": _TEXT, "date": _TEXT, "recipe": _OBJECT,
}
# A run that trained to the end ("ok" or "collapsed"): its results. Validation and TTA results are null where the
# recipe has no validation split or no TTA; the top-class share where the model could not be scored.
_TRAINED: dict[str, _Kind] = {
    "val_acc": _or_null(_PERCENT), "val_acc_tta": _or_null(_PERCENT), "test_acc": _PERCENT,
    "test_acc_tta": _or_null(_PERCENT), "train_seconds": _SECONDS, "epochs_done": _POSITIVE, "images": _COUNT,
    "top_class_share": _or_null(_SHARE),
}
# A run whose loss went non-finite: the error, and every result null.
_DIVERGED: dict[str, _Kind] = {"error": _TEXT, **{k: _NULL for k in _TRAINED if k != "top_class_share"}}


def record_problems(record: object) -> list[str]:
    """What is wrong with one sweep record, each problem a phrase naming its field; [] for a record a sweep wrote (store)."""
    if not isinstance(record, dict):
        return [f"is a JSON {_kind(record)}, not an object"]
    status = record.get("status")
    schema = {**_ALWAYS, **(_DIVERGED if status == "diverged" else _TRAINED if status in _STATUSES else {})}
    problems = []
    for name, (what, test) in schema.items():
        if name not in record:
            problems.append(f"lacks {name!r} ({what}{_for(name, status)})")
        elif not test(record[name]):
            problems.append(f"has {name!r} = {_show(record[name])}, not {what}{_for(name, status)}")
    if problems:
        return problems
    # Fields of the right kinds can still disagree with each other: a hand-edited or forged record.
    key = recipe_key(record["recipe"])
    if record["config"] != key:
        problems.append(f"has 'config' = {record['config']!r}, but its recipe hashes to {key!r}")
    if record["recipe"].get("epochs") != record["epochs"]:
        problems.append(f"has 'epochs' = {record['epochs']}, but its recipe says {record['recipe'].get('epochs')!r}")
    if status != "diverged" and record["epochs_done"] > record["epochs"]:
        problems.append(f"has 'epochs_done' = {record['epochs_done']}, more than its {record['epochs']} epochs")
    return problems


def _for(name: str, status: object) -> str:
    return f", for a run with status {status!r}" if name not in _ALWAYS else ""


def _which(record: object) -> str:
    """' (variant 'x', seed 0)' for a record that names them, '' otherwise."""
    if not isinstance(record, dict):
        return ""
    named = [f"{k} {_show(record[k])}" for k in ("variant", "seed") if k in record]
    return f" ({', '.join(named)})" if named else ""


def _kind(value: object) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", type(None): "null"}.get(type(value), "number")


def _show(value: object) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 40 else text[:37] + "..."


def _count(items: Sequence, noun: str) -> str:
    return f"{len(items)} {noun}{'s' if len(items) != 1 else ''}"


def _first(items: Sequence[str], n: int, sep: str) -> str:
    more = f"{sep}and {len(items) - n} more" if len(items) > n else ""
    return sep.join(items[:n]) + more
