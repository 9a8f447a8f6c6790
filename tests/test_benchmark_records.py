"""A benchmark record says what it is: benchmarks/time_to_accuracy.py checks every record of a results file against
its schema on read, a corrupt --out is refused with exit code 2, and benchmarks/measured.py renders a run as a recipe's
result only if it ran exactly that recipe."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from measured import recipe_changes, recipe_label, section  # noqa: E402
from test_benchmarks import record  # noqa: E402
from time_to_accuracy import _OPTIONAL, _REQUIRED, read_records, record_problems, run_key  # noqa: E402

RESULTS = sorted((REPO / "results").glob("time_to_accuracy_*.json"))


def upstream_record() -> dict:
    """A record as the background benchmark writes it: resumable fields, a key, 3 of 20 epochs done, no TTA."""
    r = record(0, [70.0], name="upstream", amp="bf16", channels_last=True)
    r["history"] = [{"epoch": i + 1, "test_acc": a, "train_seconds": 500.0, "train_seconds_total": 500.0 * (i + 1)}
                    for i, a in enumerate((60.0, 65.0, 70.0))]
    r.update(final_test_acc=70.0, final_test_acc_tta=None, train_seconds=1500.0, complete=False, epochs_done=3,
             time_to={"81.37": None, "85": None, "90": None}, time_to_tta=None,
             epoch_ended_at=["2026-12-02T18:42:19+00:00"] * 3)
    r["key"] = run_key(r)
    return r


@pytest.mark.parametrize("path", RESULTS, ids=lambda p: p.name)
def test_the_committed_records_pass_as_they_are(path):
    assert read_records(path)  # the upstream file is rewritten by the background run after every epoch: it passes too


def test_records_with_and_without_the_88_percent_threshold_pass():
    earlier = upstream_record()  # written before 88% was a threshold
    today = {**upstream_record(), "time_to": {"81.37": None, "85": None, "88": None, "90": None}}
    assert record_problems(earlier) == [] and record_problems(today) == []


def test_a_run_in_progress_as_the_benchmark_writes_it_passes(tmp_path):
    out = tmp_path / "t.json"
    out.write_text(json.dumps([upstream_record(), record(1, [80.0, 82.0])]))
    assert [r["complete"] for r in read_records(out) if "complete" in r] == [False]


def test_a_list_of_garbage_is_refused_by_name(tmp_path):
    out = tmp_path / "t.json"
    out.write_text(json.dumps([{"recipe": {"name": "cpu"}, "seed": 0, "device": "x", "history": []}, {"a": 1}, 7]))
    with pytest.raises(ValueError) as err:
        read_records(out)
    text = str(err.value)
    assert text.startswith(f"{out} holds 3 record(s) that this benchmark does not write: record 0 (recipe \"cpu\", "
                           f"seed 0) lacks 'torch' (a string)")
    assert "record 1 lacks 'recipe'" in text and "record 2 is a JSON int, not an object" in text
    assert "remove the records named" in text and "pass another --out" in text


@pytest.mark.parametrize("field", list(_REQUIRED))
def test_every_required_field_is_checked(field):
    good = upstream_record()
    assert record_problems(good) == []
    assert any(p.startswith(f"lacks {field!r}") for p in record_problems({k: v for k, v in good.items() if k != field}))
    assert any(p.startswith(f"has {field!r} = ") for p in record_problems({**good, field: {"x": 1}}))


@pytest.mark.parametrize("field", list(_OPTIONAL))
def test_every_optional_field_is_typed(field):
    assert any(p.startswith(f"has {field!r} = ") for p in record_problems({**upstream_record(), field: {"x": 1}}))


@pytest.mark.parametrize("forge, says", [
    (lambda r: r.update(reduced_mode=True), "has 'key' = "),  # a smoke test passed off as a full run
    (lambda r: r["recipe"].update(epochs=1), "has 'key' = "),
    (lambda r: r.update(complete=True), "has 3 epoch(s) of history, 'complete' true, and a recipe of 20 epochs"),
    (lambda r: r.update(final_test_acc=99.0), "has 'final_test_acc' = 99.0, but its history says 70.0"),
    (lambda r: r.update(time_to={"81.37": 1.0, "85": None, "90": None}), "has 'time_to' = "),
    (lambda r: r.update(time_to={"81.37": None, "85": None, "88": 1.0, "90": None}), "has 'time_to' = "),
    (lambda r: r.update(time_to={"81.37": None, "85": None}), "has 'time_to' = {"),  # neither today's nor the old set
    (lambda r: r.update(epochs_done=20), "has 'epochs_done' = 20, but its history says 3"),
    (lambda r: r["history"][1].pop("test_acc"), "has history row 1 "),
    (lambda r: r["history"][1].update(epoch=5), "has history row 1 "),
    (lambda r: r.update(epoch_ended_at=[]), "has 0 'epoch_ended_at' date(s) for 3 epoch(s)"),
    (lambda r: r.update(seed=True), "has 'seed' = true, not a whole number"),
])
def test_a_forged_record_is_refused_by_name(tmp_path, forge, says):
    forged = upstream_record()
    forge(forged)
    out = tmp_path / "t.json"
    out.write_text(json.dumps([record(1, [80.0]), forged]))
    with pytest.raises(ValueError, match=f"record 1 .recipe \"upstream\", seed {json.dumps(forged['seed'])}. .*"
                                         f"{says.replace('(', '.').replace(')', '.')}"):
        read_records(out)


def test_a_run_recorded_twice_is_refused(tmp_path):
    out = tmp_path / "t.json"
    out.write_text(json.dumps([upstream_record(), record(1, [80.0]), upstream_record()]))
    with pytest.raises(ValueError, match=f"{out}: records 0 and 2 are the same run .recipe 'upstream', seed 0, key "):
        read_records(out)


@pytest.mark.parametrize("content, says", [
    (b"{not json", "cannot be read as a results file"),
    (bytes(range(256)), "cannot be read as a results file"),
    (b'{"history": []}', "holds a JSON dict, not a list of time-to-accuracy records"),
    (b'[{"seed": 0}]', "holds 1 record(s) that this benchmark does not write: record 0 (seed 0) lacks 'recipe'"),
    (None, "cannot be read as a results file ([Errno 21] Is a directory"),
])
def test_a_corrupt_out_is_refused_with_exit_2_and_changes_nothing(tmp_path, content, says):
    out = tmp_path / "out.json"
    (tmp_path / "home").mkdir()
    if content is None:
        out.mkdir()
    else:
        out.write_bytes(content)
    env = {"PATH": "/usr/bin:/bin", "ALEXNET_REDUCED": "1", "HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO),
           "CIFAR10_ROOT": str(tmp_path / "no-data"), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "time_to_accuracy.py"), "--recipe", "cpu",
                           "--seeds", "0", "--out", str(out), "--checkpoints", str(tmp_path / "ck")],
                          capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stdout.startswith(f"error: {out} ") and says in done.stdout and "Traceback" not in done.stderr
    assert (out.is_dir() if content is None else out.read_bytes() == content)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "out.json"]  # no lock, no checkpoints, nothing trained


def test_measured_refuses_a_corrupt_results_file_and_leaves_the_readme(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    (results / "time_to_accuracy_cpu.json").write_text(json.dumps([{"recipe": {"name": "cpu"}}]))
    readme = tmp_path / "README.md"
    readme.write_text("# t\n<!-- MEASURED -->\nold\n<!-- /MEASURED -->\n")
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "measured.py"), "--results", str(results),
                           "--readme", str(readme)], capture_output=True, text=True, cwd=REPO,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO)})
    assert done.returncode == 2 and "time_to_accuracy_cpu.json holds 1 record(s)" in done.stdout, done.stderr
    assert "Traceback" not in done.stderr and readme.read_text().endswith("old\n<!-- /MEASURED -->\n")


def rows(results: Path) -> list[str]:
    return [line for line in section(results).splitlines() if line.startswith("| `")]


def test_a_run_with_overrides_is_never_rendered_as_the_recipes_result(tmp_path):
    exact = [record(s, [84.0 + s, 85.0 + s]) for s in (0, 1)]
    smoke = {**record(0, [9.40], epochs=1)}  # python benchmarks/time_to_accuracy.py --set epochs=1: 1 epoch, 9.40%
    (tmp_path / "time_to_accuracy_cpu.json").write_text(json.dumps([*exact, smoke]))
    cpu, overridden = rows(tmp_path)
    assert cpu.startswith("| `cpu` | 2 (0, 1) | 85.50 ± 0.71 |") and "9.40" not in cpu
    assert overridden.startswith("| `cpu` with `--set epochs=1` | 1 (0) | 9.40 |")
    # Without the run of the recipe itself, the override run is still only itself.
    (tmp_path / "time_to_accuracy_cpu.json").write_text(json.dumps([smoke]))
    assert [r.split(" | ")[0] for r in rows(tmp_path)] == ["| `cpu` with `--set epochs=1`"]


def test_the_upstream_run_is_shown_labelled_with_its_overrides(tmp_path):
    run = record(0, [70.0, 82.0], name="upstream", amp="bf16", channels_last=True)
    (tmp_path / "time_to_accuracy_upstream.json").write_text(json.dumps([run, upstream_record() | {"seed": 1}]))
    with pytest.raises(ValueError, match="'key'"):  # the seed changed, the key not: refused
        rows(tmp_path)
    progress = upstream_record()
    progress["seed"] = 1
    progress["key"] = run_key(progress)
    (tmp_path / "time_to_accuracy_upstream.json").write_text(json.dumps([run, progress]))
    shown = rows(tmp_path)  # the run in progress is not shown; the complete one is, labelled
    assert len(shown) == 1 and shown[0].startswith("| `upstream` with `--set amp=bf16 channels_last=true` | 1 (0) | 82.00 |")
    assert recipe_changes(run["recipe"]) == {"amp": "bf16", "channels_last": True}


def test_what_counts_as_the_named_recipe():
    cpu = record(0, [80.0])["recipe"]
    assert recipe_changes(cpu) == {} and recipe_label(cpu) == "`cpu`"
    old = {k: v for k, v in cpu.items() if k != "validation"}  # made before the field existed: all 50,000 images
    assert recipe_changes(old) == {}
    old["test_limit"] = old.pop("eval_limit")  # recorded under eval_limit's old name
    assert recipe_changes(old) == {}
    assert recipe_label({k: v for k, v in cpu.items() if k != "lr"}) == "`cpu` with `--set lr=(not recorded)`"
    assert recipe_label({**cpu, "validation": 0.1}) == "`cpu` with `--set validation=0.1`"
    assert recipe_label({**cpu, "model_overrides": {"dropout": 0.5}}) == \
        '`cpu` with `--set model_overrides={"dropout": 0.5}`'
    assert recipe_label({**cpu, "name": "gone"}) == "`gone` (no longer a recipe of the course)"
    assert recipe_label(copy.deepcopy(cpu) | {"epochs": 3}) == "`cpu` with `--set epochs=3`"
