"""Sweep results files: one JSON list of run records per sweep or shard, written atomically after every run."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path

from ..course import is_full, results_dir, runs_dir
from ..plumbing.files import atomic_write_json


def default_output(full: bool | None = None, shard: tuple[int, int] | None = None) -> Path:
    """Where a sweep writes: results/ablations.json in full mode, runs/ablations-reduced.json otherwise (notebook 05)."""
    folder, stem = (results_dir(), "ablations") if is_full(full) else (runs_dir(), "ablations-reduced")
    return shard_output(folder / f"{stem}.json", shard)


def shard_output(path: str | os.PathLike, shard: tuple[int, int] | None) -> Path:
    """The file a shard writes beside `path`: ablations.json -> ablations-shard2of4.json (README, "--shard")."""
    path = Path(path)
    return path if shard is None else path.with_name(f"{path.stem}-shard{shard[0] + 1}of{shard[1]}{path.suffix}")


def merge_shards(path: str | os.PathLike) -> list[dict]:
    """Write the records of `path` and its shard files into `path` itself, and return them (README, "--merge")."""
    records = sweep_records(path)
    write_records(path, records)
    return records


def split_shard(shard: tuple[int, int] | None, job: int, jobs: int) -> tuple[int, int]:
    """Shard `job` of `jobs` inside shard (i, n): runs[i::n][job::jobs] is runs[i + job*n :: n*jobs] (README, "--jobs")."""
    i, n = shard if shard is not None else (0, 1)
    return i + job * n, n * jobs


def read_sweep_file(path: str | os.PathLike) -> list[dict]:
    """Records of one results file; [] if it does not exist, ValueError if it is not a sweep file (run_sweep)."""
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
    if not isinstance(data, list) or not all(isinstance(r, dict) and "variant" in r and "seed" in r for r in data):
        raise ValueError(f"{path} does not hold a list of sweep records (dicts with 'variant' and 'seed'); "
                         f"move it aside or give another --out")
    return data


def sweep_records(path: str | os.PathLike) -> list[dict]:
    """Records of a sweep file and its shard files (name-shardIofN.json) beside it, without duplicates (notebook 05)."""
    path = Path(path)
    shards = sorted(path.parent.glob(f"{path.stem}-shard*of*.json")) if path.parent.is_dir() else []
    records: dict[tuple, dict] = {}
    for p in (path, *shards):
        for r in read_sweep_file(p):
            records.setdefault(run_key(r), r)  # the first copy of a run wins
    return list(records.values())


def write_records(path: str | os.PathLike, records: list[dict]) -> None:
    """Write records as JSON atomically: a temp file renamed over the old one (run_sweep, merge_shards)."""
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
