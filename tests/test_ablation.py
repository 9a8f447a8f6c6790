"""The ablation sweep (helpers/ablation.py) and the speed helpers (helpers/perf.py)."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch

from helpers import ablation
from helpers.ablation import (
    BASELINE,
    GROUPS,
    REDUCED_SWEEP,
    VARIANTS,
    Variant,
    load_records,
    main,
    merge_shards,
    parse_shard,
    plan_runs,
    plot_sweep,
    read_records,
    recipe_key,
    run_sweep,
    select_variants,
    shard_output,
    split_shard,
    summarize_sweep,
    variant_by_name,
    variant_recipe,
)
from helpers.data import load_cifar10
from helpers.recipes import get_recipe
from helpers.train import History, TrainingError

# What counts as "one thing": a single recipe field, the optimiser setting (optimizer + lr + schedule together),
# a single model knob, or the input pipeline with the model preset it needs.
ONE_THING = [{"loss"}, {"augment"}, {"optimizer", "lr", "schedule"}, {"model"}]


def differences(a, b) -> set[str]:
    da, db = a.to_dict(), b.to_dict()
    changed = {k for k in da if k != "name" and da[k] != db[k]}
    if "model_overrides" in changed and "model" not in changed:
        oa, ob = da["model_overrides"], db["model_overrides"]
        changed = (changed - {"model_overrides"}) | {f"model.{k}" for k in set(oa) | set(ob) if oa.get(k) != ob.get(k)}
    return changed - {"model_overrides"} if "model" in changed else changed


@pytest.mark.parametrize("variant", [v for v in VARIANTS if v.name != "baseline"], ids=lambda v: v.name)
def test_each_variant_changes_one_thing_from_its_reference(variant):
    changed = differences(variant_recipe(variant, full=True), variant_recipe(variant_by_name(variant.reference), full=True))
    model_knobs = {c for c in changed if c.startswith("model.")}
    assert changed, f"{variant.name} is identical to its reference"
    assert (len(model_knobs) == 1 and changed == model_knobs) or changed in ONE_THING, changed


def test_every_group_has_variants_and_a_known_reference():
    for name, group in GROUPS.items():
        assert any(v.group == name for v in VARIANTS), name
        variant_by_name(group.reference)
    names = [v.name for v in VARIANTS]
    assert len(names) == len(set(names))


def test_baseline_is_the_cpu_recipe_and_reduced_mode_shrinks_it():
    full = variant_recipe(BASELINE, full=True)
    cpu = get_recipe("cpu", reduced=False)
    assert {k: v for k, v in full.to_dict().items() if k != "name"} == {k: v for k, v in cpu.to_dict().items() if k != "name"}
    small = variant_recipe(BASELINE, full=False)
    assert all(getattr(small, k) == v for k, v in REDUCED_SWEEP.items())
    assert recipe_key(small) != recipe_key(full)
    seed227 = variant_recipe(variant_by_name("input_227"), full=True)
    assert seed227.model == "seed_3conv" and seed227.model_overrides == {} and seed227.loss == "ce"


def test_select_variants_adds_the_references():
    names = [v.name for v in select_variants(["input"])]
    assert names == ["baseline", "conv_3", "input_227"]
    assert [v.name for v in select_variants(["loss_adam"])] == ["baseline", "adam", "adam_softmax_ce", "adam_bce_softmax"]
    assert len(select_variants()) == len(VARIANTS)
    with pytest.raises(ValueError, match="unknown group.*'colour'.*known groups"):
        select_variants(["colour"])


def test_shards_partition_the_runs():
    variants = select_variants(["loss"])
    everything = plan_runs(variants, [0, 1, 2])
    assert len(everything) == 9
    shards = [plan_runs(variants, [0, 1, 2], (i, 4)) for i in range(4)]
    flat = [(v.name, s) for part in shards for v, s in part]
    assert sorted(flat) == sorted((v.name, s) for v, s in everything)
    assert parse_shard("2/4") == (1, 4)
    for bad in ("0/4", "5/4", "two"):
        with pytest.raises(ValueError, match="shard"):
            parse_shard(bad)
    with pytest.raises(ValueError, match="at least one seed"):
        plan_runs(variants, [])


def fake_data(n: int = 64):
    images = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    labels = torch.zeros(n, dtype=torch.long)
    return SimpleNamespace(train_images=images, train_labels=labels, test_images=images, test_labels=labels)


class FakeTrain:
    """Stands in for helpers.train.train: accuracy = 50 + seed, one loss diverges."""

    def __init__(self, diverge: str | None = None):
        self.calls = []
        self.diverge = diverge

    def __call__(self, recipe, *, data, seed, device, progress):
        self.calls.append((recipe.name, seed))
        if self.diverge and recipe.loss == self.diverge:
            raise TrainingError("the loss became non-finite (nan) at epoch 1, step 3")
        row = {"test_acc": 50.0 + seed, "test_acc_tta": 51.0 + seed, "train_seconds": 2.0, "train_seconds_total": 2.0,
               "images_per_s": 512.0}
        return None, History([row])


def test_sweep_records_resumes_and_survives_divergence(tmp_path):
    out = tmp_path / "sweep.json"
    variants = select_variants(["loss"])
    fake = FakeTrain(diverge="softmax_ce")
    records = run_sweep(variants, seeds=(0, 1), out=out, full=False, data=fake_data(), device="cpu",
                        progress=False, train_fn=fake)
    assert len(fake.calls) == 6 and len(records) == 6
    saved = read_records(out)
    assert [(r["variant"], r["seed"]) for r in saved] == [(v.name, s) for s in (0, 1) for v in variants]
    first = saved[0]
    for key in ("variant", "group", "seed", "test_acc", "test_acc_tta", "train_seconds", "epochs", "images", "device",
                "torch", "date", "reduced", "config", "recipe"):
        assert key in first, key
    assert first["reduced"] is True and first["images"] == 1024 and first["device"].startswith("device=cpu")
    diverged = [r for r in saved if r["status"] == "diverged"]
    assert {r["variant"] for r in diverged} == {"softmax_ce"} and "non-finite" in diverged[0]["error"]
    assert not list(tmp_path.glob("*.tmp"))
    # Resuming skips every recorded run; resume=False reruns them and does not duplicate records.
    again = FakeTrain()
    assert len(run_sweep(variants, (0, 1), out, full=False, data=fake_data(), progress=False, train_fn=again)) == 6
    assert again.calls == []
    run_sweep(variants, (0, 1), out, full=False, data=fake_data(), progress=False, train_fn=again, resume=False)
    assert len(again.calls) == 6 and len(read_records(out)) == 6
    # A full-size run of the same variant is a different experiment: not skipped.
    full = FakeTrain()
    run_sweep([BASELINE], (0,), out, full=True, data=fake_data(), progress=False, train_fn=full)
    assert len(full.calls) == 1


def test_shard_files_are_read_back_together(tmp_path):
    out = tmp_path / "ablations.json"
    variants = select_variants(["augment"])
    for i in range(2):
        run_sweep(variants, (0, 1), tmp_path / f"ablations-shard{i + 1}of2.json", full=False, shard=(i, 2),
                  data=fake_data(), progress=False, train_fn=FakeTrain())
    records = load_records(out)
    assert sorted((r["variant"], r["seed"]) for r in records) == sorted(
        (v.name, s) for v in variants for s in (0, 1))


def test_nested_shards_partition_the_runs():
    runs = list(range(23))

    def take(shard):
        i, n = shard
        return runs[i::n]

    # Two machines (shards 1/2 and 2/2), each running 3 jobs: each machine's jobs do exactly its shard.
    for machine in range(2):
        mine = [r for job in range(3) for r in take(split_shard((machine, 2), job, 3))]
        assert sorted(mine) == runs[machine::2]
    assert split_shard(None, 1, 4) == (1, 4)


def test_merge_writes_the_shards_into_one_file(tmp_path):
    out = tmp_path / "ablations.json"
    variants = select_variants(["augment"])
    for i in range(2):
        run_sweep(variants, (0,), shard_output(out, (i, 2)), full=False, shard=(i, 2), data=fake_data(),
                  progress=False, train_fn=FakeTrain())
    assert not out.exists()
    merged = merge_shards(out)
    assert sorted(r["variant"] for r in read_records(out)) == sorted(r["variant"] for r in merged) == \
        sorted(v.name for v in variants)
    assert len(merge_shards(out)) == len(merged)  # merging twice adds nothing


def test_jobs_run_shards_in_parallel_processes_and_merge(cifar_root, tmp_path, capsys):
    out = tmp_path / "sweep.json"
    code = main(["--reduced", "--jobs", "2", "--groups", "augment", "--seeds", "0", "--out", str(out),
                 "--data-root", str(cifar_root), "--device", "cpu"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "job 1/2: shard 1/2" in text and "job 2/2: shard 2/2" in text
    assert (tmp_path / "sweep-shard1of2.json").is_file() and (tmp_path / "sweep-shard2of2.json").is_file()
    records = read_records(out)
    assert sorted(r["variant"] for r in records) == ["baseline", "no_augment"]
    assert all(r["status"] == "ok" and r["reduced"] for r in records)
    assert main(["--jobs", "0", "--out", str(out)]) == 2 and "--jobs" in capsys.readouterr().out


def test_summary_of_a_partial_shard():
    assert summarize_sweep([record("baseline", 0, 50.0)], ["augment"]).empty  # reference only: nothing to compare
    table = summarize_sweep([record("no_augment", 0, 40.0)], ["augment"])
    assert table["verdict"].tolist() == ["no reference run yet"]


def test_broken_results_file_is_reported(tmp_path):
    bad = tmp_path / "a.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_records(bad)
    bad.write_text(json.dumps({"history": []}))
    with pytest.raises(ValueError, match="list of sweep records"):
        read_records(bad)


def record(variant: str, seed: int, acc: float | None, reduced: bool = True, status: str = "ok") -> dict:
    v = variant_by_name(variant)
    return {"variant": v.name, "group": v.group, "label": v.label, "seed": seed, "config": "x", "reduced": reduced,
            "status": status, "test_acc": acc, "test_acc_tta": acc, "train_seconds": 1.0, "flops_per_image": 1,
            "params": 1}


def test_summary_is_mean_and_std_per_variant_with_the_reference_in_each_group():
    records = [record("baseline", 0, 80.0), record("baseline", 1, 82.0), record("adam", 0, 70.0), record("adam", 1, 74.0),
               record("bce_softmax", 0, 78.0), record("bce_softmax", 1, 78.0),
               record("adam_bce_softmax", 0, 71.0), record("adam_bce_softmax", 1, None, status="diverged")]
    table = summarize_sweep(records, ["loss", "loss_adam", "optimizer"])
    base = table[(table.group == "loss") & (table.variant == "baseline")].iloc[0]
    assert base.test_acc_mean == pytest.approx(81.0) and base.test_acc_std == pytest.approx(math.sqrt(2))
    assert base.label == GROUPS["loss"].reference_label and base["test acc % (mean ± std)"] == "81.00 ± 1.41"
    adam_ref = table[(table.group == "loss_adam") & (table.variant == "adam")].iloc[0]
    assert adam_ref.test_acc_mean == pytest.approx(72.0)
    diverged = table[table.variant == "adam_bce_softmax"].iloc[0]
    assert diverged.diverged == 1 and diverged.runs == 2 and diverged.test_acc_mean == pytest.approx(71.0)
    assert list(table.group.unique()) == ["loss", "loss_adam", "optimizer"]
    fig = plot_sweep(records, ["loss", "loss_adam", "optimizer"])
    assert len([ax for ax in fig.axes if ax.has_data()]) == 3
    with pytest.raises(ValueError, match="mix reduced"):
        summarize_sweep(records + [record("baseline", 2, 90.0, reduced=False)])


def test_real_training_on_a_tiny_dataset(cifar_root, tmp_path):
    data = load_cifar10(cifar_root, download=False)
    variants = [BASELINE, variant_by_name("bce_softmax")]
    records = run_sweep(variants, (0,), tmp_path / "r.json", full=False, data=data, device="cpu", progress=False)
    assert [r["status"] for r in records] == ["ok", "ok"]
    assert all(0 <= r["test_acc"] <= 100 and r["train_images"] == len(data.train_images) for r in records)


def test_cli(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--full", "--reduced", "--seeds", "--groups", "--out", "--shard", "--no-resume"):
        assert option in text
    assert main(["--list"]) == 0
    assert "input_227" in capsys.readouterr().out
    assert main(["--shard", "9/2", "--out", str(tmp_path / "x.json")]) == 2
    assert "shard" in capsys.readouterr().out
    monkeypatch.setattr(ablation, "run_sweep", lambda *a, **k: [record("baseline", 0, 50.0), record("bce_softmax", 0, 40.0)])
    monkeypatch.setattr("helpers.data.load_cifar10", lambda *a, **k: fake_data())
    assert main(["--reduced", "--groups", "loss", "--seeds", "0", "--out", str(tmp_path / "y.json")]) == 0
    out = capsys.readouterr().out
    assert "3 runs (3 variants x 1 seeds)" in out and "BCE on softmax" in out


def test_loss_gradients_explain_the_seeds_bce_finding():
    from helpers.ablation import exact_loss, loss_gradient_table
    from helpers.train import compute_loss

    logits, labels = torch.randn(64, 10) * 2, torch.randint(0, 10, (64,))
    for kind in ("ce", "softmax_ce", "bce_softmax"):  # the exact versions are the training losses
        assert exact_loss(kind, logits, labels).item() == pytest.approx(compute_loss(kind, logits, labels).item(), rel=1e-5)
    t = loss_gradient_table(scales=(0.5, 8.0), batch=512).set_index(["scale", "label", "loss"])
    # Near the start of training: BCE on softmax points where CE points, with a gradient about C times smaller.
    assert t.loc[(0.5, "wrong", "bce_softmax"), "cosine_to_ce"] > 0.99
    assert 0.05 < t.loc[(0.5, "wrong", "bce_softmax"), "ratio_to_ce"] < 0.2
    # A confident mistake: the double softmax's gradient all but vanishes, BCE's does not.
    assert t.loc[(8.0, "wrong", "softmax_ce"), "ratio_to_ce"] < 0.05
    assert 0.1 < t.loc[(8.0, "wrong", "bce_softmax"), "ratio_to_ce"] < 0.3
    with pytest.raises(ValueError, match="scales must be positive"):
        loss_gradient_table(scales=(0.0,))
    with pytest.raises(ValueError, match="loss='mse'"):
        exact_loss("mse", logits, labels)


def test_variant_with_an_unknown_field_is_rejected():
    with pytest.raises(ValueError, match="unknown recipe field"):
        variant_recipe(Variant("x", "loss", "x", {"colour": "red"}), full=False)


# ---------------------------------------------------------------- helpers/perf.py


def test_throughput_and_interleaved_comparison(monkeypatch):
    from helpers.perf import Setting, compare_throughput, throughput

    tiny = {"width": 0.125, "fc_size": 16}
    frame = compare_throughput([Setting("a", overrides=tiny, batch_size=4), Setting("b", overrides=tiny, batch_size=8,
                                                                                    channels_last=True)],
                               steps=1, warmup=0, repeats=2, device="cpu", progress=False)
    assert list(frame["label"]) == ["a", "b"] and (frame["images_per_s"] > 0).all()
    assert (frame["images_per_s_min"] <= frame["images_per_s"]).all() and (frame["amp_dtype"] == "float32").all()
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda m: compiled.append(m) or m)
    row = throughput("cifar_alexnet_small", 2, steps=1, warmup=0, repeats=1, compile=True, device="cpu", **tiny)
    assert compiled and row["compile"] and row["images_per_s"] > 0
    with pytest.raises(ValueError, match="labels must be unique"):
        compare_throughput([Setting("a"), Setting("a")], device="cpu")
    with pytest.raises(ValueError, match="repeats must be an integer >= 1"):
        compare_throughput([Setting("a")], repeats=0, device="cpu")


def test_comparison_holds_one_step_at_a_time_and_keeps_compiled_ones(monkeypatch):
    # Two copies of the seed's model and their optimiser state do not fit a 2 GB machine beside the data:
    # compare_throughput must build, time and drop each uncompiled step in turn, interleaved.
    import gc

    import helpers.perf as perf

    alive: dict[int, bool] = {}  # id -> compiled?
    most_alive, built, timed = [0], [], []

    class Counted(perf._Step):
        def __init__(self, setting, device, seed=0):
            super().__init__(setting, device, seed)
            built.append(setting.label)
            alive[id(self)] = setting.compile
            most_alive[0] = max(most_alive[0], sum(not compiled for compiled in alive.values()))

        def time(self, steps):
            timed.append((self.setting.label, steps))
            return super().time(steps)

        def __del__(self):
            alive.pop(id(self), None)

    monkeypatch.setattr(perf, "_Step", Counted)
    monkeypatch.setattr(torch, "compile", lambda m: m)
    tiny = {"width": 0.125, "fc_size": 16}
    settings = [perf.Setting("a", overrides=tiny, batch_size=4), perf.Setting("b", overrides=tiny, batch_size=4),
                perf.Setting("c", overrides=tiny, batch_size=4, compile=True)]
    gc.disable()  # only reference counting may free the steps, as in a kernel between collections
    try:
        perf.compare_throughput(settings, steps=2, warmup=1, repeats=2, device="cpu", progress=False)
    finally:
        gc.enable()
    assert most_alive[0] == 1
    assert built == ["a", "b", "c", "a", "b", "a", "b"]  # the compiled step is built (and compiled) once
    measured = [label for label, steps in timed if steps == 2]
    assert measured == ["a", "b", "c", "a", "b", "c"]  # interleaved
    assert [steps for label, steps in timed if label == "a"] == [1, 1, 2, 1, 2]  # first call, then warm-up + timing


def test_flop_counts_and_peaks():
    from helpers.models import build_model, total_flops
    from helpers.perf import cpu_peak_flops, gpu_peak_flops, step_flops

    model = build_model("cifar_alexnet_small")
    flops = step_flops(model)
    assert flops["forward"] == total_flops(model)
    assert 2.5 < flops["train"] / flops["forward"] < 3.0  # backward ~ 2x forward, minus the input gradient of conv1
    peak = cpu_peak_flops(cores=4, ghz=2.0, flags={"avx2", "fma", "avx512f", "avx512_bf16"}, vendor="GenuineIntel")
    assert peak["fp32_peak"] == 4 * 2.0e9 * 64 and peak["bf16_peak"] == 2 * peak["fp32_peak"] and peak["estimate"]
    assert cpu_peak_flops(cores=1, ghz=1.0, flags={"avx512f"}, vendor="AuthenticAMD")["fp32_flops_per_cycle"] == 32
    assert gpu_peak_flops("NVIDIA H100 80GB HBM3")["bf16_peak"] == pytest.approx(989.5e12)
    assert gpu_peak_flops("NVIDIA H100 PCIe")["gpu"] == "H100 PCIe"
    assert gpu_peak_flops("NVIDIA L40S") is None
    with pytest.raises(ValueError, match="cores must be >= 1"):
        cpu_peak_flops(cores=0)
