"""The benchmark scripts' bookkeeping: README rendering from records, time-to-accuracy, the regenerate plan."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.training.engine import History

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from measured import (  # noqa: E402
    END,
    RECIPES_END,
    RECIPES_START,
    START,
    ablation_lines,
    recipe_table,
    section,
    side_by_side_lines,
    unfinished_lines,
    write_readme_section,
)
from time_to_accuracy import bench_recipe, summarize  # noqa: E402


def bare_record(seed: int, accs: list[float], seconds: float = 10.0, reduced: bool = False) -> dict:
    """A run of len(accs) epochs with only the fields the summaries read (never written to a results file)."""
    history = [{"epoch": i + 1, "test_acc": a, "test_acc_tta": a + 1, "train_seconds_total": seconds * (i + 1)}
               for i, a in enumerate(accs)]
    h = History(history)
    return {
        "recipe": {"name": "cpu"}, "seed": seed, "device": "device=cpu | Test CPU", "torch": "2.x",
        "date": "2026-11-27T00:00:00+00:00", "data": "CIFAR-10 (JPEG mirror)", "reduced_mode": reduced,
        "final_test_acc": accs[-1], "final_test_acc_tta": accs[-1] + 1, "train_seconds": seconds * len(accs),
        "time_to": {k: h.time_to(float(k)) for k in ("81.37", "85", "88", "90")},
        "time_to_tta": {k: h.time_to(float(k), "test_acc_tta") for k in ("81.37", "85", "88", "90")},
        "history": history,
    }


def record(seed: int, accs: list[float], seconds: float = 10.0, reduced: bool = False, name: str = "cpu",
           **overrides) -> dict:
    """A complete run as time_to_accuracy.py records it: the named recipe (with `overrides`, as --set gives them),
    its last epochs scoring `accs` and the ones before 10%, `seconds` of training per epoch."""
    recipe = bench_recipe(name, overrides, reduced=False)
    accs = [10.0] * (recipe.epochs - len(accs)) + list(accs)
    return {**bare_record(seed, accs, seconds, reduced), "recipe": recipe.to_dict()}


def test_history_time_to():
    h = History([{"test_acc": 70, "train_seconds_total": 5}, {"test_acc": 82, "train_seconds_total": 11},
                 {"test_acc": 86, "train_seconds_total": 17}])
    assert h.time_to(81.37) == 11 and h.time_to(85) == 17 and h.time_to(90) is None


def test_readme_section_matches_records(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    records = [record(0, [80, 84, 86]), record(1, [79, 83, 88]), record(2, [75, 80, 84]), record(9, [99], reduced=True)]
    (results / "time_to_accuracy_cpu.json").write_text(json.dumps(records))
    text = section(results)
    row = next(line for line in text.splitlines() if line.startswith("| `cpu`"))
    # Reduced-mode records never reach the README; mean ± std of 86, 88, 84 is 86.00 ± 2.00.
    assert row.startswith("| `cpu` | 3 (0, 1, 2) |") and "86.00 ± 2.00" in row and "87.00 ± 2.00" in row
    # The cpu recipe's 10 epochs, 10 s each, the last three scoring accs: plain crossing of 81.37% at epochs 9, 9, 10:
    # 90 s; with flip-TTA 9, 9, 10: 90 s. Of 85%: plain 10, 10 and never -> "100 s (2/3 seeds)"; flip-TTA 9, 10, 10.
    assert "| 100 ± 0 | 90 s / 90 s | 100 s (2/3 seeds) / 100 s |" in row and "CIFAR-10 (JPEG mirror)" in row
    assert "device=cpu, Test CPU" in row  # the device line's "|" would break the table
    readme = tmp_path / "README.md"
    readme.write_text(f"# title\n\n{START}\nold\n{END}\n\n## after\n")
    write_readme_section(readme, results)
    new = readme.read_text()
    assert "old" not in new and "## after" in new and new.count(START) == 1 and row in new
    with pytest.raises(ValueError, match="no <!-- MEASURED --> marker"):
        (tmp_path / "bare.md").write_text("nothing")
        write_readme_section(tmp_path / "bare.md", results)


def sweep_record(variant: str, seed: int, acc: float, status: str = "ok", reduced: bool = False) -> dict:
    """A run of the sweep as helpers/ablation/runner.py records it, validation accuracy `acc`."""
    from helpers.ablation import variant_by_name, variant_recipe
    from helpers.training.recipes import recipe_key

    v = variant_by_name(variant)
    recipe = variant_recipe(v, full=not reduced)
    return {"variant": variant, "group": v.group, "label": v.label, "reference": v.reference, "seed": seed,
            "config": recipe_key(recipe), "status": status, "reduced": reduced, "epochs": recipe.epochs,
            "train_images": 45000, "val_images": 5000, "test_images": 10000, "validation": recipe.validation,
            "params": 1, "flops_per_image": 1, "top_class_share": 0.1, "val_acc": acc, "val_acc_tta": None,
            "test_acc": acc + 1, "test_acc_tta": None, "train_seconds": 60.0, "epochs_done": recipe.epochs,
            "images": 1, "device": "device=cpu | Test CPU", "torch": "2.x", "data": "CIFAR-10 (JPEG mirror)",
            "date": f"2026-12-0{seed + 1}T00:00:00+00:00", "recipe": recipe.to_dict()}


def test_readme_lists_the_ablation_sweep_with_paired_verdicts(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    assert ablation_lines(results) == []  # no sweep recorded: no block
    records = [sweep_record("baseline", s, a) for s, a in enumerate((80.0, 81.0, 82.0))]
    records += [sweep_record("gelu", s, a) for s, a in enumerate((82.0, 83.0, 84.5))]  # +2, +2, +2.5
    records += [sweep_record("conv_3", s, a) for s, a in enumerate((79.0, 82.0, 81.0))]  # -1, +1, -1
    records += [sweep_record("norm_none", 0, 10.0, status="collapsed"), sweep_record("norm_none", 1, 60.0)]
    smoke = [sweep_record("dropout_0.5", 0, 99.0, reduced=True)]
    (results / "ablations.json").write_text(json.dumps(smoke))
    assert ablation_lines(results) == []  # a smoke test never reaches the README ...
    (results / "ablations.json").write_text(json.dumps(records + smoke))
    with pytest.raises(ValueError, match="is a reduced .smoke-test. run, .* a full one: a results file never mixes"):
        ablation_lines(results)  # ... and a file that mixes them is refused, not filtered
    (results / "ablations.json").write_text(json.dumps(records))
    lines = ablation_lines(results)
    rows = {line.split(" | ")[1]: line for line in lines if line.startswith("| ") and "`" in line.split(" | ")[1]}
    assert list(rows) == ["`baseline` (5 conv)", "`conv_3` (3 conv)", "`gelu` (GELU)", "`norm_none` (no norm)"]
    assert "| 81.00 ± 1.00 | — | reference | 82.00 ± 1.00 |" in rows["`baseline` (5 conv)"]
    # Paired differences 2, 2, 2.5: mean 2.17, sd 0.289, half-width 4.303 * 0.289 / sqrt(3) = 0.72.
    assert "| +2.17 (+1.45 to +2.88) | better |" in rows["`gelu` (GELU)"]
    assert "within noise" in rows["`conv_3` (3 conv)"]
    # The collapsed run is counted, not averaged: one paired seed is left, so no interval.
    assert "| 2, 1 collapsed | 60.00 | -21.00 | one seed: no interval |" in rows["`norm_none` (no norm)"]
    assert "11 runs (1 collapsed or diverged)" in lines[0] and "CIFAR-10 (JPEG mirror)" in lines[0]
    assert "2026-12-01 to 2026-12-03" in lines[0] and "device=cpu, Test CPU" in lines[0]
    assert "\n".join(lines) in section(results)


def test_a_side_by_side_file_gives_one_row_per_recipe(tmp_path):
    old = [record(s, [80, 84, 86], seconds=20.0, name="cpu_v1") for s in (0, 1)]
    new = [record(s, [82, 86]) for s in (0, 1)]
    (tmp_path / "time_to_accuracy_cpu_vs_v1.json").write_text(json.dumps(old + new))
    rows = [line for line in section(tmp_path).splitlines() if line.startswith("| `cpu")]
    assert [row.split(" |")[0] for row in rows] == ["| `cpu_v1`", "| `cpu`"] and all("| 2 (0, 1) |" in r for r in rows)


def test_time_to_accuracy_summary_counts_seeds_that_reached():
    text = summarize([bare_record(0, [80, 84, 86]), bare_record(1, [70, 75, 80])])
    assert "time_to     85.00%  median    30.0 s  (1/2 seeds reached)" in text
    assert "time_to     88.00%  not reached  (0/2 seeds reached)" in text
    assert "time_to     90.00%  not reached  (0/2 seeds reached)" in text
    earlier = bare_record(2, [80, 86, 89])  # written before 88% was a threshold: counted where it has a time
    for table in ("time_to", "time_to_tta"):
        earlier[table].pop("88")
    text = summarize([bare_record(0, [80, 84, 86]), bare_record(1, [70, 85, 88]), earlier])
    assert "time_to     88.00%  median    30.0 s  (1/2 seeds reached)" in text
    assert "time_to     85.00%  median    20.0 s  (3/3 seeds reached)" in text


def test_side_by_side_ratios_pair_seeds_on_the_same_machine():
    from helpers.speed import side_by_side_ratios

    old = [{**bare_record(s, [80, 82, 84, 86], seconds=20.0), "recipe": {"name": "old"}} for s in (0, 1)]
    new = [{**bare_record(s, [82, 86], seconds=15.0), "recipe": {"name": "new"}} for s in (0, 1)]
    elsewhere = {**bare_record(0, [90], seconds=1.0), "recipe": {"name": "new"}, "device": "device=cpu | Other CPU"}
    table = side_by_side_ratios(old + new + [elsewhere], ["old", "new"], targets=("81.37", "85", "90"))
    # 81.37%: old 40 s, new 15 s; 85%: old 80 s, new 30 s; last epoch: 80 s vs 30 s: 0.375 each, per seed
    assert list(table["seconds to"]) == ["81.37%", "85%", "last epoch"]  # neither reached 90%: no row
    assert all(abs(x - 0.375) < 1e-9 for x in table["median ratio"]) and set(table["seeds"]) == {2}
    assert table["per seed"][0] == "0: 0.38, 1: 0.38"  # the other machine's run is never paired


def test_regenerate_dry_run_plans_and_refuses_cpu_full_mode(tmp_path, monkeypatch):
    env = {"PATH": "/usr/bin:/bin", "ALEXNET_REDUCED": "0", "HOME": str(tmp_path)}
    cmd = [sys.executable, str(REPO / "benchmarks" / "regenerate.py"), "--out", str(tmp_path / "r")]
    out = subprocess.run([*cmd, "--dry-run"], capture_output=True, text=True, env=env, cwd=REPO)
    if "mode: cuda" not in out.stdout:
        assert out.returncode == 2 and "no CUDA device" in out.stdout
        assert "parts to run: data, recipes, ablations, notebooks, readme" in out.stdout
        assert "estimated time:" in out.stdout
    reduced = subprocess.run([*cmd, "--dry-run", "--parts", "readme"], capture_output=True, text=True,
                             env={**env, "ALEXNET_REDUCED": "1"}, cwd=REPO)
    assert reduced.returncode == 0 and "mode: reduced; parts to run: readme" in reduced.stdout


def test_profile_categories_name_the_operators():
    from profile_epoch import category

    assert category("aten::mkldnn_convolution") == category("aten::convolution_backward") == "convolution"
    assert category("aten::addmm") == "fully connected" and category("aten::native_batch_norm") == "batch norm"
    assert category("aten::max_pool2d_with_indices") == "pooling" and category("aten::something_new") == "other"


def test_every_recipe_search_idea_is_one_valid_change_of_its_rounds_base():
    import recipe_search

    allowed = {"epochs", "batch_size", "lr", "warmup", "label_smoothing", "model_overrides", "weight_decay", "amp", "ema",
               "whiten", "flip", "lookahead", "low_res_epochs", "low_res_size"}
    for round, (base_name, epochs, ideas) in recipe_search.ROUNDS.items():
        base = recipe_search.idea_recipe("base", round).to_dict()
        assert base["name"] == base_name and base["epochs"] == epochs and base["validation"] == 0.1

        def changed(name: str) -> set[str]:
            return {k for k, v in recipe_search.idea_recipe(name, round).to_dict().items() if v != base[k]}  # noqa: B023

        for name in ideas:
            assert changed(name) <= allowed, name
            if "+" in name:  # a stack is exactly the changes of the ideas it names, each screened on its own first
                parts = name.split("+")
                assert all(part in ideas for part in parts), name
                assert ideas[name] == {k: v for part in parts for k, v in ideas[part].items()}, name
                continue
            # one idea, one change, except a batch size with its learning rate, a low resolution with its epochs
            # and a longer schedule without dropout
            rest = changed(name) - {"lr"} - ({"low_res_size"} if name.startswith("low_res_") else set())
            assert len(rest) <= 1 or name.startswith(("batch_", "no_dropout_")), name
        if "width_1.5" in ideas:  # a model change keeps the base's other model overrides
            assert recipe_search.idea_recipe("width_1.5", round).model_overrides == {**base["model_overrides"],
                                                                                    "width": 1.5}
    with pytest.raises(ValueError, match="unknown idea 'magic'"):
        recipe_search.idea_recipe("magic")


def test_the_recipe_search_refuses_a_misspelt_idea_and_a_second_writer_before_training(tmp_path):
    from helpers.plumbing.files import exclusive_lock

    script = [sys.executable, str(REPO / "benchmarks" / "recipe_search.py"), "--out", str(tmp_path / "log.json")]
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "PYTHONPATH": str(REPO),
           "CIFAR10_ROOT": str(tmp_path / "no-data")}  # nothing to train on: a refusal must come first
    typo = subprocess.run([*script, "--ideas", "base", "wihten"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert typo.returncode == 2 and "unknown idea 'wihten'" in typo.stderr and "--list" in typo.stderr, typo.stderr
    with exclusive_lock(tmp_path / ".log.json.lock", "the log"):
        busy = subprocess.run([*script, "--ideas", "base"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert busy.returncode == 2 and "another search writes it" in busy.stderr, busy.stderr
    assert not (tmp_path / "log.json").exists()


def test_the_readme_shows_what_results_holds():
    readme = (REPO / "README.md").read_text()
    committed = readme[readme.index(START):readme.index(END) + len(END)]
    assert committed == section(REPO / "results"), (
        "README.md's Measured section differs from results/: run `python benchmarks/measured.py` and commit README.md")


def test_the_readmes_recipe_table_is_the_recipes():
    readme = (REPO / "README.md").read_text()
    committed = readme[readme.index(RECIPES_START):readme.index(RECIPES_END) + len(RECIPES_END)]
    assert committed == recipe_table(), (
        "README.md's recipe table differs from helpers.training.recipes: run `python benchmarks/measured.py` and commit")


def test_a_stopped_time_to_accuracy_run_continues_bit_for_bit(tmp_path):
    from conftest import make_cifar_folder

    root = make_cifar_folder(tmp_path / "cifar", per_batch=40)
    env = {"PATH": "/usr/bin:/bin", "ALEXNET_REDUCED": "1", "HOME": str(tmp_path), "CIFAR10_ROOT": str(root),
           "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(REPO / "benchmarks" / "time_to_accuracy.py"), "--recipe", "cpu", "--seeds", "0",
           "--checkpoints", str(tmp_path / "ck"), "--set", "epochs=3"]

    def bench(out: str, *extra: str) -> list[dict]:
        done = subprocess.run([*cmd, "--out", str(tmp_path / out), *extra], capture_output=True, text=True, env=env,
                              cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        return json.loads((tmp_path / out).read_text())

    whole = bench("whole.json")
    assert whole[0]["complete"] and whole[0]["epochs_done"] == 3 and not list((tmp_path / "ck").glob("*.pt"))
    part = bench("part.json", "--stop-after", "1")
    assert not part[0]["complete"] and part[0]["epochs_done"] == 1 and len(list((tmp_path / "ck").glob("*.pt"))) == 1
    (checkpoint,) = (tmp_path / "ck").glob("*.pt")
    checkpoint.rename(tmp_path / "aside.pt")  # a machine replaced: the record survives in git, the checkpoint does not
    lost = subprocess.run([*cmd, "--out", str(tmp_path / "part.json")], capture_output=True, text=True, env=env,
                          cwd=tmp_path)
    assert lost.returncode == 2 and "stops after epoch 1 of 3" in lost.stdout and "--restart" in lost.stdout, lost.stdout
    assert json.loads((tmp_path / "part.json").read_text()) == part  # never started over silently
    (tmp_path / "aside.pt").rename(checkpoint)
    rest = bench("part.json")
    assert len(rest) == 1 and rest[0]["complete"] and len(rest[0]["epoch_ended_at"]) == 3
    untimed = [[{k: v for k, v in row.items() if "seconds" not in k and k != "images_per_s"} for row in r[0]["history"]]
               for r in (whole, rest)]
    assert untimed[0] == untimed[1]  # the continued run is the uninterrupted one, epoch for epoch
    again = subprocess.run([*cmd, "--out", str(tmp_path / "part.json")], capture_output=True, text=True, env=env,
                           cwd=tmp_path)
    assert "recorded already" in again.stdout and json.loads((tmp_path / "part.json").read_text()) == rest
    other = bench("part.json", "--stop-after", "1", "--set", "epochs=3", "lr=0.1")  # another recipe: another run
    assert len(other) == 2 and {r["recipe"]["lr"] for r in other} == {0.2, 0.1}
    for lost_checkpoint in (tmp_path / "ck").glob("*.pt"):
        lost_checkpoint.unlink()
    restarted = bench("part.json", "--restart", "--set", "epochs=3", "lr=0.1")  # asked for: starts over, says so
    assert {r["recipe"]["lr"]: r["epochs_done"] for r in restarted} == {0.2: 3, 0.1: 3}


def _throughput_record(rates: dict[str, tuple[float, dict]]) -> list[dict]:
    from helpers.training import get_recipe

    recipes = {name: get_recipe(name, reduced=False, **overrides) for name, (_, overrides) in rates.items()}
    return [{"device": "device=cpu | Test CPU", "date": "2026-12-03T00:00:00+00:00", "steps": 10, "repeats": 5,
             "recipes": {name: {"overrides": overrides, "model": recipes[name].model,
                                "model_overrides": dict(recipes[name].model_overrides),
                                "batch_size": recipes[name].batch_size, "amp": recipes[name].amp,
                                "channels_last": recipes[name].channels_last, "images_per_s": rate,
                                "images_per_s_min": rate, "images_per_s_max": rate, "amp_dtype": "bfloat16"}
                         for name, (rate, overrides) in rates.items()}}]


def test_side_by_side_projects_time_to_accuracy_from_epochs_and_one_hours_rates(tmp_path):
    # The committed records: the unfinished upstream run (never at 81.37% in its epochs) and three complete cpu runs.
    for name in ("time_to_accuracy_upstream.json", "time_to_accuracy_cpu_vs_v1.json"):
        (tmp_path / name).write_text((REPO / "results" / name).read_text())
    upstream = json.loads((REPO / "results" / "time_to_accuracy_upstream.json").read_text())[0]
    done = len(upstream["history"])
    (tmp_path / "throughput_cpu.json").write_text(json.dumps(_throughput_record(
        {"upstream": (100.0, {"amp": "bf16", "channels_last": True}), "cpu": (2000.0, {})})))
    text = "\n".join(side_by_side_lines(tmp_path))
    # 50,000 images an epoch: 500 s at 100 images/s, 25 s at 2,000.
    assert f"| 100.0 | 500 s | more than {done} (not reached yet) | more than {done * 500:,} s |" in text
    cpu_runs = [r for r in json.loads((REPO / "results" / "time_to_accuracy_cpu_vs_v1.json").read_text())
                if r["recipe"]["name"] == "cpu"]
    epochs = sorted(next(h["epoch"] for h in r["history"] if h["test_acc"] >= 81.37) for r in cpu_runs)[1]
    assert f"| `cpu` | 2,000.0 | 25 s | {epochs} (median of 3 seeds) | {epochs * 25:,} s |" in text
    assert f"more than {done * 500 / (epochs * 25):,.0f} times as long as `cpu`" in text
    # A rate for overrides no record was made with matches nothing: no table from one recipe alone.
    (tmp_path / "throughput_cpu.json").write_text(json.dumps(_throughput_record(
        {"upstream": (100.0, {}), "cpu": (2000.0, {})})))
    assert side_by_side_lines(tmp_path) == []


def test_an_unfinished_run_is_shown_epoch_by_epoch_never_as_a_row(tmp_path):
    (tmp_path / "time_to_accuracy_upstream.json").write_text(
        (REPO / "results" / "time_to_accuracy_upstream.json").read_text())
    record = json.loads((tmp_path / "time_to_accuracy_upstream.json").read_text())[0]
    text = "\n".join(unfinished_lines(tmp_path))
    last = record["history"][-1]
    assert f"recorded up to epoch {last['epoch']} of 20, stopped or still running" in text
    assert f"{last['epoch']}: {last['test_acc']:.2f} ({last['train_seconds_total']:,.0f} s)" in text
    assert "| `upstream`" not in section(tmp_path)


def test_the_throughput_command_times_recipes_in_turns_and_refuses_bad_input(tmp_path):
    out = tmp_path / "tp.json"
    cmd = [sys.executable, str(REPO / "benchmarks" / "throughput.py"), "--recipe", "cpu", "cpu_v1",
           "--steps", "1", "--repeats", "2", "--out", str(out)]
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), "HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*cmd, "--set", "cpu:batch_size=32", "cpu_v1:batch_size=32"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    record = json.loads(out.read_text())[-1]
    assert set(record["recipes"]) == {"cpu", "cpu_v1"} and record["repeats"] == 2
    assert record["recipes"]["cpu"]["overrides"] == {"batch_size": 32} and record["recipes"]["cpu"]["images_per_s"] > 0
    for bad, says in ((["--set", "cpu:no_such_field=1"], "no_such_field"), (["--set", "gpu:amp=off"], "RECIPE:FIELD"),
                      (["--set", "cpu:amp"], "RECIPE:FIELD=VALUE")):
        refused = subprocess.run([*cmd, *bad], env=env, capture_output=True, text=True, timeout=300)
        assert refused.returncode == 2 and says in refused.stdout, refused.stdout + refused.stderr
    out.write_text("{not json")
    refused = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "cannot be read" in refused.stdout
    assert out.read_text() == "{not json"
