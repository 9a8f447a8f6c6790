"""Running and reading the ablation sweep: helpers/ablation/runner.py (runner, records, shards, jobs, command line) and
helpers/ablation/report.py (summary, verdict, chart)."""

from __future__ import annotations

import json
import math
import statistics
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from conftest import make_cifar_folder
from helpers import commands
from helpers.ablation import (
    BASELINE,
    Variant,
    default_output,
    plot_differences,
    plot_sweep,
    recorded_runs,
    run_sweep,
    select_variants,
    summarize_sweep,
    variant_by_name,
    variant_recipe,
)
from helpers.ablation import runner as sweep
from helpers.ablation.report import t95
from helpers.ablation.runner import plan_runs
from helpers.ablation.store import merge_shards, parse_shard, read_sweep_file, shard_output, split_shard, sweep_records
from helpers.commands import ablation_command
from helpers.course import results_dir, runs_dir
from helpers.data import load_cifar10
from helpers.plumbing.checks import TrainingError
from helpers.training.engine import History


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


def test_recorded_runs_reads_without_training(tmp_path):
    out = tmp_path / "sweep.json"
    variants = select_variants(["loss"])
    assert recorded_runs(variants, (0, 1), out, full=False) == ([], [(v.name, s) for s in (0, 1) for v in variants])
    fake = FakeTrain()
    run_sweep(variants, (0,), out, full=False, data=fake_data(), progress=False, train_fn=fake)
    found, missing = recorded_runs(variants, (0, 1), out, full=False)
    assert [(r["variant"], r["seed"]) for r in found] == [(v.name, 0) for v in variants]
    assert missing == [(v.name, 1) for v in variants] and len(fake.calls) == len(variants)
    # a record made with other settings (here: full size) is not a run of this sweep
    assert recorded_runs(variants, (0,), out, full=True)[0] == []


def test_default_output_keeps_reduced_runs_out_of_the_results_folder():
    assert default_output(full=True) == results_dir() / "ablations.json"
    assert default_output(full=False, shard=(1, 4)) == runs_dir() / "ablations-reduced-shard2of4.json"


@pytest.fixture
def sweep_cifar_root(tmp_path):
    """A tiny CIFAR-10 root with one reduced-mode batch (256) of training images: 5 x 52 = 260."""
    return make_cifar_folder(tmp_path / "cifar", per_batch=52)


def fake_data(n: int = 64):
    images = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    labels = torch.zeros(n, dtype=torch.long)
    return SimpleNamespace(train_images=images, train_labels=labels, test_images=images, test_labels=labels,
                           root=Path("/no/cifar/here"))


class FakeTrain:
    """Stands in for helpers.train.train: accuracy = 50 + seed, one loss diverges."""

    def __init__(self, diverge: str | None = None):
        self.calls = []
        self.diverge = diverge

    def __call__(self, recipe, *, data, seed, device, progress, **checkpointing):
        self.calls.append((recipe.name, seed))
        if self.diverge and recipe.loss == self.diverge:
            raise TrainingError("the loss became non-finite (nan) at epoch 1, step 3")
        row = {"val_acc": 40.0 + seed, "val_acc_tta": 41.0 + seed, "test_acc": 50.0 + seed, "test_acc_tta": 51.0 + seed,
               "train_seconds": 2.0, "train_seconds_total": 2.0, "images_per_s": 512.0}
        return None, History([row])


def test_sweep_records_resumes_and_survives_divergence(tmp_path):
    out = tmp_path / "sweep.json"
    variants = select_variants(["loss"])
    fake = FakeTrain(diverge="softmax_ce")
    records = run_sweep(variants, seeds=(0, 1), out=out, full=False, data=fake_data(), device="cpu",
                        progress=False, train_fn=fake)
    assert len(fake.calls) == 6 and len(records) == 6
    saved = read_sweep_file(out)
    assert [(r["variant"], r["seed"]) for r in saved] == [(v.name, s) for s in (0, 1) for v in variants]
    first = saved[0]
    for key in ("variant", "group", "seed", "val_acc", "test_acc", "test_acc_tta", "train_seconds", "epochs", "images",
                "device", "torch", "date", "reduced", "config", "recipe", "val_images", "top_class_share", "data"):
        assert key in first, key
    assert first["data"] == "CIFAR-10"  # fake images in memory, not the JPEG mirror's files
    assert first["reduced"] is True and first["images"] == 1024 and first["device"].startswith("device=cpu")
    diverged = [r for r in saved if r["status"] == "diverged"]
    assert {r["variant"] for r in diverged} == {"softmax_ce"} and "non-finite" in diverged[0]["error"]
    assert not list(tmp_path.glob("*.tmp"))
    # Resuming skips every recorded run; resume=False reruns them and does not duplicate records.
    again = FakeTrain()
    assert len(run_sweep(variants, (0, 1), out, full=False, data=fake_data(), progress=False, train_fn=again)) == 6
    assert again.calls == []
    run_sweep(variants, (0, 1), out, full=False, data=fake_data(), progress=False, train_fn=again, resume=False)
    assert len(again.calls) == 6 and len(read_sweep_file(out)) == 6
    # A full-size run is a different experiment: refused in a file of reduced runs, resume=False or not, never mixed.
    full = FakeTrain()
    before = out.read_bytes()
    for resume in (True, False):
        with pytest.raises(ValueError, match=f"{out} holds 6 reduced .smoke-test. run.s.*this sweep makes full runs.*"
                                             f"never mixes them: give another --out"):
            run_sweep([BASELINE], (0,), out, full=True, data=fake_data(), progress=False, train_fn=full, resume=resume)
    assert full.calls == [] and out.read_bytes() == before
    run_sweep([BASELINE], (0,), tmp_path / "full.json", full=True, data=fake_data(), progress=False, train_fn=full)
    assert len(full.calls) == 1
    # A variant of the same name and mode but other settings (here: another lr) is refused too ...
    other = Variant("baseline", "baseline", "baseline at lr 0.1", {"lr": 0.1})
    with pytest.raises(ValueError, match="other settings.*never mixes"):
        run_sweep([other], (0,), out, full=False, data=fake_data(), progress=False, train_fn=full)
    assert len(full.calls) == 1 and out.read_bytes() == before
    # ... and resume=False starts it afresh: its records of other settings are replaced, never mixed.
    run_sweep([other], (0,), out, full=False, data=fake_data(), progress=False, train_fn=full, resume=False)
    baseline = [r for r in read_sweep_file(out) if r["variant"] == "baseline"]
    assert len(full.calls) == 2 and len(baseline) == 1 and baseline[0]["recipe"]["lr"] == 0.1


def test_shard_files_are_read_back_together(tmp_path):
    out = tmp_path / "ablations.json"
    variants = select_variants(["augment"])
    for i in range(2):
        run_sweep(variants, (0, 1), tmp_path / f"ablations-shard{i + 1}of2.json", full=False, shard=(i, 2),
                  data=fake_data(), progress=False, train_fn=FakeTrain())
    records = sweep_records(out)
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
    assert sorted(r["variant"] for r in read_sweep_file(out)) == sorted(r["variant"] for r in merged) == \
        sorted(v.name for v in variants)
    assert len(merge_shards(out)) == len(merged)  # merging twice adds nothing


def test_jobs_run_shards_in_parallel_processes_and_merge(sweep_cifar_root, tmp_path, capsys):
    out = tmp_path / "sweep.json"
    code = ablation_command(["--reduced", "--jobs", "2", "--groups", "augment", "--seeds", "0", "--out", str(out),
                 "--data-root", str(sweep_cifar_root), "--device", "cpu"])
    text = capsys.readouterr().out
    assert code == 0, text
    assert "job 1/2: shard 1/2" in text and "job 2/2: shard 2/2" in text
    assert (tmp_path / "sweep-shard1of2.json").is_file() and (tmp_path / "sweep-shard2of2.json").is_file()
    records = read_sweep_file(out)
    assert sorted(r["variant"] for r in records) == ["baseline", "no_augment"]
    assert all(r["status"] in ("ok", "collapsed") and r["reduced"] for r in records)  # tiny data: near chance
    assert ablation_command(["--jobs", "0", "--out", str(out)]) == 2 and "--jobs" in capsys.readouterr().out


def test_summary_of_a_partial_shard():
    assert summarize_sweep([record("baseline", 0, 50.0)], ["augment"]).empty  # reference only: nothing to compare
    table = summarize_sweep([record("no_augment", 0, 40.0)], ["augment"])
    assert table["verdict"].tolist() == ["no reference run yet"]


def test_broken_results_file_is_reported(tmp_path):
    bad = tmp_path / "a.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        read_sweep_file(bad)
    bad.write_text(json.dumps({"history": []}))
    with pytest.raises(ValueError, match="list of sweep records"):
        read_sweep_file(bad)


def record(variant: str, seed: int, acc: float | None, reduced: bool = True, status: str = "ok") -> dict:
    v = variant_by_name(variant)
    return {"variant": v.name, "group": v.group, "label": v.label, "seed": seed, "config": "x", "reduced": reduced,
            "status": status, "val_acc": acc, "test_acc": None if acc is None else acc - 1, "test_acc_tta": acc,
            "train_seconds": 1.0, "flops_per_image": 1, "params": 1}


def test_summary_pairs_each_variant_with_its_reference_over_the_same_seeds():
    records = [record("baseline", s, a) for s, a in ((0, 80.0), (1, 82.0), (2, 81.0))]
    records += [record("adam", s, a) for s, a in ((0, 70.0), (1, 74.0), (2, 72.0))]
    records += [record("bce_softmax", s, a) for s, a in ((0, 78.0), (1, 80.0), (2, 79.5))]
    records += [record("softmax_ce", s, a) for s, a in ((0, 81.0), (1, 81.0), (2, 81.5))]
    records += [record("adam_bce_softmax", 0, 71.0), record("adam_bce_softmax", 1, None, status="diverged"),
                record("adam_bce_softmax", 2, 9.8, status="collapsed")]
    table = summarize_sweep(records, ["loss", "loss_adam", "optimizer"])
    row = {f"{r.variant}/{r.group}": r for r in table.itertuples()}
    base = row["baseline/loss"]
    assert base.val_acc_mean == pytest.approx(81.0) and base.val_acc_std == pytest.approx(1.0)
    assert base.test_acc_mean == pytest.approx(80.0) and base.verdict == "reference"
    # bce_softmax - baseline per seed: -2, -2, -1.5 -> mean -1.833, sd 0.289, t(2) = 4.303: [-2.55, -1.12]: worse.
    bce = row["bce_softmax/loss"]
    assert bce.paired_seeds == 3 and bce.delta == pytest.approx(-11 / 6)
    half = 4.303 * statistics.stdev([-2, -2, -1.5]) / math.sqrt(3)
    assert (bce.delta_low, bce.delta_high) == (pytest.approx(-11 / 6 - half), pytest.approx(-11 / 6 + half))
    assert bce.verdict == "worse" and row["adam/optimizer"].verdict == "worse"
    assert row["softmax_ce/loss"].verdict == "within noise"  # +1, -1, +0.5: the interval spans zero
    # Diverged and collapsed runs are counted, never averaged in: one seed is left, so no interval.
    adam_bce = row["adam_bce_softmax/loss_adam"]
    assert (adam_bce.runs, adam_bce.diverged, adam_bce.collapsed) == (3, 1, 1)
    assert adam_bce.val_acc_mean == pytest.approx(71.0) and adam_bce.verdict == "one seed: no interval"
    assert list(table.group.unique()) == ["loss", "loss_adam", "optimizer"]
    fig = plot_sweep(records, ["loss", "loss_adam", "optimizer"])
    assert len([ax for ax in fig.axes if ax.has_data()]) == 3
    fig = plot_differences(table)  # one point per variant with a paired difference, coloured by its verdict
    ticks = [t.get_text() for t in fig.axes[0].get_yticklabels()]
    assert len(ticks) == 4 and any("BCE" in t or "bce" in t.lower() for t in ticks)
    with pytest.raises(ValueError, match="no variant has a paired difference"):
        plot_differences(table[table["verdict"] == "reference"])
    with pytest.raises(ValueError, match="mix reduced"):
        summarize_sweep(records + [record("baseline", 3, 90.0, reduced=False)])
    with pytest.raises(ValueError, match="unknown group 'colour'"):
        summarize_sweep(records, ["colour"])


def test_a_run_that_predicts_one_class_is_recorded_as_collapsed(sweep_cifar_root):
    data = load_cifar10(sweep_cifar_root, download=False)
    recipe = variant_recipe(BASELINE, full=False)

    class OneClass(torch.nn.Module):
        def forward(self, x):
            return torch.zeros(len(x), 10).index_fill_(1, torch.tensor([3]), 5.0)

    assert sweep._collapse(OneClass(), recipe, data, torch.device("cpu"), {"val_acc": 30.0}) == {
        "top_class_share": 1.0, "status": "collapsed"}
    assert sweep._collapse(None, recipe, data, torch.device("cpu"), {"val_acc": 11.0})["status"] == "collapsed"
    assert "status" not in sweep._collapse(None, recipe, data, torch.device("cpu"), {"val_acc": 40.0})


def test_real_training_on_a_tiny_dataset(sweep_cifar_root, tmp_path):
    data = load_cifar10(sweep_cifar_root, download=False)
    variants = [BASELINE, variant_by_name("bce_softmax")]
    records = run_sweep(variants, (0,), tmp_path / "r.json", full=False, data=data, device="cpu", progress=False)
    assert {r["status"] for r in records} <= {"ok", "collapsed"} and all(r["top_class_share"] for r in records)
    assert all(0 <= r["test_acc"] <= 100 and r["train_images"] + r["val_images"] == len(data.train_images)
               for r in records)


def test_cli(tmp_path, capsys, monkeypatch):
    with pytest.raises(SystemExit) as exit_:
        ablation_command(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--full", "--reduced", "--seeds", "--groups", "--out", "--shard", "--no-resume"):
        assert option in text
    assert ablation_command(["--list"]) == 0
    assert "input_227" in capsys.readouterr().out
    assert ablation_command(["--shard", "9/2", "--out", str(tmp_path / "x.json")]) == 2
    assert "shard" in capsys.readouterr().out
    monkeypatch.setattr(commands, "run_sweep", lambda *a, **k: [record("baseline", 0, 50.0), record("bce_softmax", 0, 40.0)])
    monkeypatch.setattr(commands, "load_cifar10", lambda *a, **k: fake_data())
    assert ablation_command(["--reduced", "--groups", "loss", "--seeds", "0", "--out", str(tmp_path / "y.json")]) == 0
    out = capsys.readouterr().out
    assert "3 runs (3 variants x 1 seeds)" in out and "BCE on softmax" in out


def test_an_out_that_is_a_folder_or_not_json_is_refused_by_name(tmp_path, capsys):
    assert ablation_command(["--reduced", "--groups", "loss", "--out", str(tmp_path)]) == 2
    assert f"{tmp_path} is a folder" in capsys.readouterr().out
    binary = tmp_path / "photo.json"
    binary.write_bytes(bytes(range(256)))
    assert ablation_command(["--reduced", "--groups", "loss", "--out", str(binary)]) == 2
    assert f"{binary} is not valid JSON" in capsys.readouterr().out and binary.read_bytes() == bytes(range(256))


def test_t95_is_the_table_value_and_rejects_nonsense():
    assert (t95(1), t95(2), t95(30), t95(200)) == (12.706, 4.303, 2.042, 1.96)
    for bad in (0, -1, 2.5):
        with pytest.raises(ValueError, match="degrees of freedom"):
            t95(bad)


def test_estimate_prefers_this_variant_on_this_machine_then_scales_the_baseline():
    here, there = "device=cpu | This CPU", "device=cuda | That GPU"

    def timed(variant: str, seconds: float, device: str, status: str = "ok") -> dict:
        return {**record(variant, 0, 80.0, reduced=False, status=status), "train_seconds": seconds, "device": device,
                "flops_per_image": sweep._variant_flops(variant_by_name(variant))}

    gelu, conv_3 = variant_by_name("gelu"), variant_by_name("conv_3")
    records = [timed("gelu", s, here) for s in (100.0, 140.0, 120.0)] + [timed("gelu", 1.0, there),
                                                                        timed("gelu", 9.0, here, status="diverged")]
    records += [timed("baseline", s, here) for s in (90.0, 110.0)]
    seconds, basis = sweep.estimate_seconds(gelu, records, here)
    assert seconds == 120.0 and basis == "median of 3 recorded run(s) of gelu"
    ratio = sweep._variant_flops(conv_3) / sweep._variant_flops(BASELINE)
    seconds, basis = sweep.estimate_seconds(conv_3, records, here)
    assert seconds == pytest.approx(100.0 * ratio) and "of baseline, scaled by FLOPs per image" in basis
    assert 0 < ratio < 1  # three conv layers cost less than five
    seconds, basis = sweep.estimate_seconds(gelu, records, "device=mps | Another")
    # The median of 100, 120, 140 (here) and 1 (there): any machine's runs, and the estimate says whose.
    assert seconds == 110.0 and "this machine may differ" in basis and here in basis and there in basis
    assert sweep.estimate_seconds(gelu, [], here) is None


def test_a_second_sweep_on_the_same_file_is_refused_while_the_first_writes(tmp_path):
    import subprocess
    import sys

    from helpers.plumbing.files import Busy

    out = tmp_path / "sweep.json"
    hold = ("import sys\nfrom helpers.plumbing.files import exclusive_lock\n"
            "with exclusive_lock(sys.argv[1], 'x'):\n    print('locked', flush=True)\n    sys.stdin.read()\n")
    holder = subprocess.Popen([sys.executable, "-c", hold, str(tmp_path / ".sweep.json.lock")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"  # stands in for a first sweep, mid-run
        fake = FakeTrain()
        with pytest.raises(Busy, match=f"sweep.json .another sweep writes it. is in use by process {holder.pid}"):
            run_sweep(select_variants(["loss"]), (0,), out, full=False, data=fake_data(), progress=False, train_fn=fake)
        assert fake.calls == [] and not out.exists()  # nothing trained, nothing written
    finally:
        holder.communicate("")
    assert len(run_sweep(select_variants(["loss"]), (0,), out, full=False, data=fake_data(), progress=False,
                         train_fn=FakeTrain())) == 3  # the lock died with its holder


def test_a_stopped_run_continues_from_its_epoch_checkpoint(sweep_cifar_root, tmp_path, monkeypatch):
    from helpers.ablation import runner as paths
    from helpers.training import train

    monkeypatch.setattr(paths, "runs_dir", lambda: tmp_path / "runs")
    data = load_cifar10(sweep_cifar_root, download=False)
    whole = run_sweep([BASELINE], (0,), tmp_path / "whole.json", full=False, data=data, device="cpu", progress=False)

    def stop(history, model):
        raise KeyboardInterrupt  # a stop after the first epoch's checkpoint is written

    def stopped(recipe, **options):
        return train(recipe, callbacks=[stop], **options)

    out = tmp_path / "stopped.json"
    with pytest.raises(KeyboardInterrupt):
        run_sweep([BASELINE], (0,), out, full=False, data=data, device="cpu", progress=False, train_fn=stopped)
    checkpoint = sweep.checkpoint_path(out, BASELINE, 0, variant_recipe(BASELINE, full=False))
    assert checkpoint.is_file() and read_sweep_file(out) == []
    continued = run_sweep([BASELINE], (0,), out, full=False, data=data, device="cpu", progress=False)
    assert not checkpoint.exists()  # recorded, so the checkpoint is gone
    for key in ("val_acc", "val_acc_tta", "test_acc", "epochs_done", "images"):
        assert continued[0][key] == whole[0][key], key
