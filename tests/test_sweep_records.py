"""A sweep record says what it is: helpers/ablation/store.py checks every record of a results file against the schema
on read and on write, and never lets one file (or a merge) mix reduced and full runs or two recipes of a variant."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from test_sweep import FakeTrain, fake_data

from helpers.ablation import run_sweep, select_variants, variant_by_name
from helpers.ablation.store import (
    _ALWAYS,
    _DIVERGED,
    _TRAINED,
    merge_shards,
    read_sweep_file,
    record_problems,
    shard_output,
    sweep_records,
    write_records,
)
from helpers.commands import ablation_command

REPO = Path(__file__).resolve().parent.parent
COMMITTED = REPO / "results" / "ablations.json"


@pytest.fixture(scope="module")
def real() -> list[dict]:
    """The committed sweep's records, as the sweep wrote them."""
    return json.loads(COMMITTED.read_text())


def write(path: Path, data) -> bytes:
    path.write_text(json.dumps(data, indent=1))
    return path.read_bytes()


def test_the_committed_results_pass_as_they_are():
    records = read_sweep_file(COMMITTED)  # the background sweep may append to it: at least the 51 committed runs
    assert len(records) >= 51 and len(sweep_records(COMMITTED)) >= 51
    assert all(record_problems(r) == [] for r in records) and {r["status"] for r in records} >= {"ok", "collapsed"}


def test_records_a_sweep_writes_pass_for_every_status(tmp_path):
    out = tmp_path / "sweep.json"
    run_sweep(select_variants(["loss"]), (0,), out, full=False, data=fake_data(), progress=False,
              train_fn=FakeTrain(diverge="softmax_ce"))
    records = read_sweep_file(out)
    assert {r["status"] for r in records} == {"ok", "diverged"} and all(record_problems(r) == [] for r in records)


def test_a_list_of_garbage_is_refused_by_name_and_nothing_is_trained(tmp_path):
    out = tmp_path / "sweep.json"
    before = write(out, [{"variant": "baseline", "seed": 0}, {"a": 1}, [], 3])
    with pytest.raises(ValueError) as err:
        read_sweep_file(out)
    text = str(err.value)
    assert text.startswith(f"{out} holds 4 records that no sweep writes: ")
    assert "record 0 (variant \"baseline\", seed 0) lacks 'group' (a string)" in text
    assert "record 1 lacks 'variant' (a string)" in text and "record 2 is a JSON list, not an object" in text
    assert "remove the records named" in text and "give another --out" in text
    fake = FakeTrain()
    with pytest.raises(ValueError, match="no sweep writes"):
        run_sweep([variant_by_name("baseline")], (0,), out, full=False, data=fake_data(), progress=False, train_fn=fake)
    assert fake.calls == [] and out.read_bytes() == before


def test_a_forged_record_without_results_is_refused_not_skipped_as_done(tmp_path):
    out = tmp_path / "sweep.json"
    run_sweep([variant_by_name("baseline")], (0,), out, full=False, data=fake_data(), progress=False, train_fn=FakeTrain())
    forged = read_sweep_file(out)[0]
    for field in ("val_acc", "test_acc", "train_seconds", "epochs_done", "images"):
        del forged[field]
    before = write(out, [forged])
    fake = FakeTrain()
    with pytest.raises(ValueError, match=r"record 0 \(variant \"baseline\", seed 0\) lacks 'val_acc' \(a number from 0 "
                                         r"to 100 or null, for a run with status 'ok'\), lacks 'test_acc'"):
        run_sweep([variant_by_name("baseline")], (0,), out, full=False, data=fake_data(), progress=False, train_fn=fake)
    assert fake.calls == [] and out.read_bytes() == before


@pytest.mark.parametrize("field", [*_ALWAYS, *_TRAINED])
def test_every_field_of_a_trained_run_is_required_and_typed(real, field):
    good = next(r for r in real if r["status"] == "ok")
    missing = {k: v for k, v in good.items() if k != field}
    assert any(p.startswith(f"lacks {field!r}") for p in record_problems(missing)), field
    wrong = {**good, field: "nonsense" if not isinstance(good[field], str) else 7}
    assert any(p.startswith(f"has {field!r} = ") for p in record_problems(wrong)), field


@pytest.mark.parametrize("field", list(_DIVERGED))
def test_a_diverged_run_holds_its_error_and_no_results(tmp_path, field):
    out = tmp_path / "sweep.json"
    run_sweep([variant_by_name("softmax_ce")], (0,), out, full=False, data=fake_data(), progress=False,
              train_fn=FakeTrain(diverge="softmax_ce"))
    diverged = read_sweep_file(out)[0]
    assert diverged["status"] == "diverged" and record_problems(diverged) == []
    wrong = {**diverged, field: 50.0}
    assert any(p.startswith(f"has {field!r} = 50.0, not ") and "status 'diverged'" in p for p in record_problems(wrong))


def test_fields_that_disagree_are_refused(real):
    good = next(r for r in real if r["status"] == "ok")
    edited = copy.deepcopy(good)
    edited["recipe"]["lr"] = 1.0  # the recipe changed, its hash not
    assert record_problems(edited) == [f"has 'config' = {good['config']!r}, but its recipe hashes to "
                                       f"{record_problems(edited)[0].rsplit(' ', 1)[1]}"]
    assert any("'epochs'" in p for p in record_problems({**good, "epochs": good["epochs"] + 1}))
    assert any("'epochs_done'" in p for p in record_problems({**good, "epochs_done": good["epochs"] + 1}))
    assert any("'seed' = true" in p for p in record_problems({**good, "seed": True}))  # a bool is not a seed
    assert any("'test_acc' = 101" in p for p in record_problems({**good, "test_acc": 101}))


def test_a_run_recorded_twice_in_one_file_is_refused(tmp_path, real):
    out = tmp_path / "sweep.json"
    write(out, [real[0], real[1], real[0]])
    with pytest.raises(ValueError, match=f"{out}: records 0 and 2 are the same run .{real[0]['variant']} seed "):
        read_sweep_file(out)


def test_reduced_runs_are_never_added_to_a_full_results_file(tmp_path, real):
    out = tmp_path / "ablations.json"
    before = write(out, [r for r in real if r["variant"] == "conv_3"])  # a full file without the planned variant
    fake = FakeTrain()
    with pytest.raises(ValueError, match=f"{out} holds 3 full run.s. .e.g. record 0 .variant \"conv_3\", seed 0..; this "
                                         f"sweep makes reduced .smoke-test. runs, and a results file never mixes them"):
        run_sweep([variant_by_name("no_augment")], (0,), out, full=False, data=fake_data(), progress=False, train_fn=fake)
    assert fake.calls == [] and out.read_bytes() == before


def test_a_file_that_mixes_modes_or_recipes_is_refused_on_read_and_never_written(tmp_path, real):
    out = tmp_path / "ablations.json"
    reduced = tmp_path / "reduced.json"
    run_sweep([variant_by_name("baseline")], (5,), reduced, full=False, data=fake_data(), progress=False,
              train_fn=FakeTrain())
    mixed = [real[0], read_sweep_file(reduced)[0]]
    write(out, mixed)
    with pytest.raises(ValueError, match=f"record 1 of {out} .variant \"baseline\", seed 5. is a reduced .smoke-test. "
                                         f"run, record 0 of {out} .variant \"baseline\", seed 0. a full one"):
        read_sweep_file(out)
    fresh = tmp_path / "fresh.json"
    with pytest.raises(ValueError, match=f"not written, {fresh} is left as it was: .*never mixes them"):
        write_records(fresh, mixed)
    assert not fresh.exists()
    with pytest.raises(ValueError, match=f"not written, {fresh} is left as it was: .*would hold 1 record that no sweep writes: "
                                         f"record 0 .seed 0. lacks 'variant'"):
        write_records(fresh, [{"seed": 0}])
    assert not fresh.exists()
    other = copy.deepcopy(real[1])
    other["seed"], other["recipe"]["lr"] = 9, 0.01
    from helpers.training.recipes import recipe_key

    other["config"] = recipe_key(other["recipe"])
    write(out, [real[1], other])
    with pytest.raises(ValueError, match="was made with recipe .*another budget, split or baseline"):
        read_sweep_file(out)


def shards_of(out: Path, full_records: list[dict], tmp_path: Path) -> tuple[bytes, Path]:
    """A full results file and a shard beside it that holds a reduced run."""
    before = write(out, full_records)
    shard = shard_output(out, (1, 2))
    run_sweep([variant_by_name("no_augment")], (0,), shard, full=False, data=fake_data(), progress=False,
              train_fn=FakeTrain())
    return before, shard


def test_merge_refuses_mixed_modes_before_it_writes(tmp_path, real, capsys):
    out = tmp_path / "ablations.json"
    before, shard = shards_of(out, [r for r in real if r["variant"] == "baseline"], tmp_path)
    with pytest.raises(ValueError, match=f"record 0 of {shard} .variant \"no_augment\", seed 0. is a reduced"):
        merge_shards(out)
    assert out.read_bytes() == before
    assert ablation_command(["--merge", "--full", "--out", str(out), "--device", "cpu"]) == 2
    assert "is a reduced (smoke-test) run" in capsys.readouterr().out and out.read_bytes() == before


def test_merge_refuses_a_garbage_shard_before_it_writes(tmp_path, real):
    out = tmp_path / "ablations.json"
    before = write(out, real[:3])
    shard = shard_output(out, (0, 2))
    write(shard, [{"variant": "baseline", "seed": 1}])
    with pytest.raises(ValueError, match=f"{shard} holds 1 record that no sweep writes: record 0"):
        merge_shards(out)
    assert out.read_bytes() == before
    shard.unlink()
    assert merge_shards(out) == real[:3]  # a clean set of files still merges
