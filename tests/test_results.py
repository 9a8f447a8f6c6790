"""helpers/results.py: run descriptions, comparing two runs, and the recorded time-to-accuracy files (notebooks 03, 04, 06)."""

from __future__ import annotations

import json

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from helpers.speed import benchmark_runs, plot_time_to_accuracy, time_to_accuracy_table  # noqa: E402
from helpers.training import describe_run, get_recipe, state_dict_differences, without_timing  # noqa: E402
from helpers.training.runs import TIMING_KEYS  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_state_dict_differences_and_history_comparison():
    a = {"w": torch.ones(2, 2), "b": torch.zeros(2)}
    assert state_dict_differences(a, {k: v.clone() for k, v in a.items()}) == {}
    b = {"w": torch.ones(2, 2), "b": torch.tensor([0.0, 0.25])}
    assert state_dict_differences(a, b) == {"b": 0.25}
    with pytest.raises(ValueError, match="different tensors"):
        state_dict_differences(a, {"w": a["w"]})
    rows = [{"epoch": 1, "test_acc": 50.0, "train_seconds": 3.0, "images_per_s": 10.0, "train_seconds_total": 3.0}]
    assert without_timing(rows) == [{"epoch": 1, "test_acc": 50.0}]
    assert set(TIMING_KEYS) == set(rows[0]) - {"epoch", "test_acc"}


def test_recorded_results_are_read_and_tabled(tmp_path):
    assert benchmark_runs(tmp_path / "absent") == {}
    record = {"recipe": "cpu", "seed": 0, "device": "cpu", "history": [{"test_acc": 80.0, "train_seconds_total": 100.0},
                                                                        {"test_acc": 86.0, "train_seconds_total": 200.0}],
              "time_to": {"81.37": 200.0, "90": None}}
    (tmp_path / "time_to_accuracy_cpu.json").write_text(json.dumps([record]))
    (tmp_path / "other.json").write_text(json.dumps({"something": "else"}))
    (tmp_path / "broken.json").write_text("{not json")
    # a recipe search's records have a recipe and a history too, but monitor validation: not shown as test runs
    (tmp_path / "cpu_recipe_search.json").write_text(json.dumps([{"recipe": {}, "history": [{"val_acc": 80.0}]}]))
    found = benchmark_runs(tmp_path)
    assert list(found) == ["time_to_accuracy_cpu.json"]
    assert list(benchmark_runs(tmp_path, "*.json")) == ["cpu_recipe_search.json", "time_to_accuracy_cpu.json"]
    table = time_to_accuracy_table(found["time_to_accuracy_cpu.json"])
    assert table.loc[0, "final test_acc %"] == 86.0 and table.loc[0, "epochs"] == 2
    assert table.loc[0, "s to 81.37%"] == 200.0
    # benchmarks record the whole recipe; its name is what the table shows
    as_dict = dict(record, recipe={"name": "cpu", "epochs": 2})
    assert time_to_accuracy_table([as_dict]).loc[0, "recipe"] == "cpu"


def test_time_to_accuracy_plot_has_one_line_per_run():
    history = [{"test_acc": 50.0, "train_seconds_total": 10.0}, {"test_acc": 70.0, "train_seconds_total": 20.0}]
    fig = plot_time_to_accuracy([{"recipe": "a", "seed": 0, "history": history},
                                 {"recipe": {"name": "b"}, "history": history[:1]}], targets=(60,))
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.lines[:2]] == ["a, seed 0", "b"]
    assert list(ax.lines[0].get_xdata()) == [10.0, 20.0] and list(ax.lines[0].get_ydata()) == [50.0, 70.0]
    assert ax.get_xscale() == "linear" and ax.get_xlim()[0] == 0


def test_time_to_accuracy_plot_colours_by_recipe_and_machine_and_goes_log_for_far_apart_runs():
    def run(recipe, seed, device, seconds):
        history = [{"test_acc": 50.0, "train_seconds_total": seconds}, {"test_acc": 80.0, "train_seconds_total": 2 * seconds}]
        return {"recipe": recipe, "seed": seed, "device": device, "history": history}

    xeon, epyc = "device=cpu | Intel(R) Xeon(R) Processor | torch 2 | 2 CPU threads", "device=cpu | AMD EPYC | torch 2 | 2"
    colours = {}
    runs = [run("cpu", 0, xeon, 10.0), run("cpu", 1, xeon, 12.0), run("cpu", 0, epyc, 2000.0)]
    ax = plot_time_to_accuracy(runs, targets=(85,), colours=colours).axes[0]
    assert list(colours) == ["cpu on Intel Xeon", "cpu on AMD EPYC"] and len(set(colours.values())) == 2
    assert ax.lines[0].get_color() == ax.lines[1].get_color() != ax.lines[2].get_color()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["cpu on Intel Xeon", "cpu on AMD EPYC"]
    assert ax.get_xscale() == "log"  # 10 s and 4,000 s on one axis
    again = plot_time_to_accuracy(runs[2:], colours=colours).axes[0]
    assert again.lines[0].get_color() == colours["cpu on AMD EPYC"]  # the same colour in the next chart
    with pytest.raises(ValueError, match="no run with a history"):
        plot_time_to_accuracy([{"recipe": "cpu", "history": []}])


def test_describe_run_names_the_settings():
    line = describe_run(get_recipe("cpu", reduced=False, epochs=3, train_limit=1024), "cpu", [{}, {}])
    assert line == ("device=cpu, recipe=cpu (model cifar_alexnet_small), epochs=2/3, train images=1024, "
                    "validation images=5000, test images=10000")
    whole = describe_run(get_recipe("cpu", reduced=False, validation=0.0))
    assert whole.endswith("train images=50000, test images=10000")  # no split: all 50,000 train, test monitored
    assert describe_run(get_recipe("upstream", reduced=True)).startswith("recipe=upstream (model upstream_3conv), epochs=2/2")


def test_recipe_search_table_compares_each_idea_with_the_base_of_its_seed():
    from helpers.speed import recipe_search_table

    def rec(idea, seed, acc, change=None):
        return {"idea": idea, "seed": seed, "val_acc": acc, "val_acc_tta": acc + 0.5, "change": change or {},
                "recipe": {"epochs": 6}, "history": [{}] * 6}

    later = {**rec("base", 0, 85.0), "round": 2}
    table = recipe_search_table([rec("base", 0, 80.0), rec("no_dropout", 0, 81.5, {"model_overrides": {"dropout": 0.0}}),
                                 rec("lr_0.4", 1, 79.0, {"lr": 0.4}), later, {**rec("ema", 0, 85.5, {"ema": 0.99}),
                                                                             "round": 2}])
    assert list(table["vs base (points)"][:2]) == [0.0, 1.5] and pd_isna(table["vs base (points)"][2])
    assert list(table["vs base (points)"][3:]) == [0.0, 0.5]  # each round against its own base
    assert list(table["round"]) == [1, 1, 1, 2, 2]
    assert table["change"][1] == "model_overrides={'dropout': 0.0}" and table["change"][0] == "-"
    assert set(table["epochs"]) == {6}


def test_search_verdicts_read_a_round_against_its_base_and_say_how_many_seeds_back_it():
    from helpers.speed import search_verdicts

    def rec(idea, seed, acc, change=None, seconds=100.0, round=2):
        history = [{"images_per_s": 1000 / seconds}] * 3 + [{"images_per_s": 1.0}]  # one epoch paused: not counted
        return {"idea": idea, "round": round, "seed": seed, "val_acc": acc, "val_acc_tta": acc + 0.5,
                "val_acc_tta6": acc + 0.8, "change": change or {}, "train_seconds": seconds, "history": history}

    records = [rec("base", 0, 80.0), rec("base", 1, 80.2), rec("ema", 0, 81.5, {"ema": 0.99}, 101.0),
               rec("ema", 1, 81.3, {"ema": 0.99}, 103.0), rec("whiten", 0, 80.4, {"whiten": True}, 90.0),
               rec("lr", 0, 70.0, {"lr": 9}, round=1)]
    table = search_verdicts(records, round=2)
    rows = {line.split("|")[1].strip(): line for line in table.splitlines()[2:]}
    assert set(rows) == {"`ema`", "`whiten`"}  # round 1's ideas are not this round's
    assert "+1.30" in rows["`ema`"] and "1.02x" in rows["`ema`"]
    assert "a gain over 2 seeds (seed 0: +1.50, seed 1: +1.10)" in rows["`ema`"]
    assert "+0.40" in rows["`whiten`"] and "within noise at one seed: a screen" in rows["`whiten`"]
    assert "0.90x" in rows["`whiten`"]
    # Low-resolution epochs run faster than the others: each resolution's median counts for its share of the epochs.
    low = {**rec("low_res", 0, 80.1, {"low_res_epochs": 2}), "recipe": {"low_res_epochs": 2},
           "history": [{"images_per_s": 20.0}] * 2 + [{"images_per_s": 10.0}] * 4}  # 0.05 and 0.1 s per image
    row = search_verdicts([rec("base", 0, 80.0), low], round=2).splitlines()[2]
    assert "0.83x" in row  # (2 x 0.05 + 4 x 0.1) / 6 = 0.0833 s per image, against the base's 0.1


def pd_isna(value) -> bool:
    import pandas as pd

    return bool(pd.isna(value))
