"""The training engine, recipes and command line (helpers/training/, helpers/commands.py)."""

from __future__ import annotations

import json
import math
import os
import re

import pytest
import torch

from conftest import real_cifar_root
from helpers.commands import train_command
from helpers.course import REDUCED, seed_everything
from helpers.data import DeviceLoader
from helpers.device import amp_dtype
from helpers.models import build_model
from helpers.plumbing.checks import TrainingError
from helpers.speed import upstream_timing_batch
from helpers.training import Recipe, compute_loss, fit, get_recipe, load_checkpoint, make_optimizer, without_timing
from helpers.training.engine import lr_factor, param_groups


def tiny_loaders(n: int = 128, seed: int = 0):
    gen = torch.Generator().manual_seed(123)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (n,), generator=gen)
    return (DeviceLoader(images, labels, 32, seed=seed), DeviceLoader(images[:64], labels[:64], 32, shuffle=False))


def tiny_recipe(**changes) -> Recipe:
    base = Recipe(name="tiny", model="cifar_alexnet_small", epochs=3, batch_size=32, lr=0.05, amp="off", tta=True,
                  channels_last=False)
    return base.replace(**changes)


def run(recipe: Recipe, seed: int = 0, **kwargs):
    seed_everything(seed)
    model = build_model(recipe.model, **recipe.model_overrides)
    train, val = tiny_loaders(seed=seed)
    return model, fit(model, train, val, recipe, device="cpu", progress=False, **kwargs)


def test_history_has_every_metric():
    _, history = run(tiny_recipe(epochs=2))
    assert [r["epoch"] for r in history] == [1, 2]
    for key in ("train_loss", "train_acc", "val_loss", "val_acc", "val_acc_tta", "lr", "train_seconds",
                "train_seconds_total", "images_per_s"):
        assert key in history[0]
    assert not any(k.startswith("test") for row in history for k in row)  # no test loader: the test set is never seen
    assert history[1]["train_seconds_total"] == pytest.approx(history[0]["train_seconds"] + history[1]["train_seconds"])
    assert history.column("epoch") == [1, 2]


def test_the_test_set_is_scored_once_after_the_last_epoch():
    model = build_model("cifar_alexnet_small")
    train, val = tiny_loaders()
    test = DeviceLoader(val.images[:32].cpu(), val.labels[:32].cpu(), 16, shuffle=False)
    history = fit(model, train, val, tiny_recipe(epochs=2), test_loader=test, device="cpu", progress=False)
    assert "test_acc" not in history[0] and {"test_loss", "test_acc", "test_acc_tta"} <= set(history[1])
    monitored = fit(build_model("cifar_alexnet_small"), train, test, tiny_recipe(epochs=1), monitor="test",
                    device="cpu", progress=False)
    assert "test_acc" in monitored[0] and "val_acc" not in monitored[0]  # a benchmark that monitors the test set


def test_same_seed_gives_identical_history_on_cpu():
    _, a = run(tiny_recipe(), seed=3)
    _, b = run(tiny_recipe(), seed=3)
    _, c = run(tiny_recipe(), seed=4)
    assert without_timing(a) == without_timing(b)
    assert without_timing(a) != without_timing(c)


def test_resume_equals_uninterrupted(tmp_path):
    recipe = tiny_recipe(epochs=4)
    full_model, full = run(recipe, seed=1)
    ckpt = tmp_path / "run" / "checkpoint.pt"
    _, part = run(recipe, seed=1, checkpoint=ckpt, stop_after=2)
    assert len(part) == 2 and ckpt.is_file()
    # A fresh process would rebuild everything; a different global seed must not matter.
    seed_everything(99)
    resumed_model = build_model(recipe.model)
    train, test = tiny_loaders(seed=1)
    resumed = fit(resumed_model, train, test, recipe, device="cpu", progress=False, checkpoint=ckpt, resume=True)
    assert without_timing(resumed) == without_timing(full)
    for (name, a), b in zip(full_model.state_dict().items(), resumed_model.state_dict().values()):
        assert torch.equal(a, b), name
    assert not list(tmp_path.glob("run/*.tmp"))  # atomic write leaves no temp file


def test_checkpoint_of_another_architecture_names_both(tmp_path):
    ckpt = tmp_path / "c.pt"
    run(tiny_recipe(epochs=1), checkpoint=ckpt)
    other = build_model("cifar_alexnet_small", activation="gelu")
    with pytest.raises(TrainingError, match=r"different architecture(.|\n)*checkpoint:.*relu(.|\n)*this model:.*gelu"):
        load_checkpoint(ckpt, other)


def test_missing_checkpoint_says_how_to_get_one(tmp_path):
    with pytest.raises(FileNotFoundError, match="train first"):
        load_checkpoint(tmp_path / "none.pt")


def test_non_finite_loss_stops_with_epoch_step_and_lr():
    with pytest.raises(TrainingError, match=r"non-finite.*epoch 1, step \d+ \(learning rate"):
        run(tiny_recipe(lr=1e12, schedule="constant", optimizer="sgd", weight_decay=0))


def test_out_of_memory_suggests_smaller_batch(monkeypatch):
    model = build_model("cifar_alexnet_small")

    def boom(x):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(model, "forward", boom)
    train, test = tiny_loaders()
    with pytest.raises(TrainingError, match="out of memory at batch size 32.*--batch-size 16"):
        fit(model, train, test, tiny_recipe(), device="cpu", progress=False)


def test_bce_on_softmax_that_blows_up_is_a_training_error_not_a_crash():
    recipe = tiny_recipe(loss="bce_softmax", lr=1e6, epochs=1, tta=False, schedule="constant", momentum=0.0,
                         nesterov=False)
    with pytest.raises(TrainingError, match="non-finite|not finite: the run diverged"):
        run(recipe)


def test_losses():
    logits = torch.tensor([[10.0, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    right, wrong = torch.tensor([0]), torch.tensor([1])
    assert compute_loss("ce", logits, right) < 1e-3
    # A softmax before CrossEntropyLoss squashes the loss: even a perfect answer costs -log(e / (e + 9)).
    floor = -math.log(math.e / (math.e + 9))
    assert compute_loss("softmax_ce", logits, right).item() == pytest.approx(floor, abs=1e-3)
    assert compute_loss("softmax_ce", logits, wrong) < compute_loss("ce", logits, wrong) / 3
    assert 0 < compute_loss("bce_softmax", logits, wrong) < compute_loss("ce", logits, wrong)
    with pytest.raises(ValueError, match="loss='mse'.*ce, softmax_ce, bce_softmax"):
        compute_loss("mse", logits, right)


def test_schedules():
    total = 100
    one = [lr_factor("onecycle", s, total, 0.25) for s in range(total + 1)]
    assert one[0] == pytest.approx(0.1) and max(one) == pytest.approx(1.0) and one[-1] == 0
    assert one.index(max(one)) == 25
    cos = [lr_factor("cosine", s, total, 0.0) for s in range(total + 1)]
    assert cos[0] == 1 and cos[-1] == pytest.approx(0, abs=1e-9) and cos[50] == pytest.approx(0.5)
    assert [lr_factor("step", s, total) for s in (0, 49, 50, 75)] == pytest.approx([1, 1, 0.1, 0.01])
    assert lr_factor("constant", 77, total) == 1
    with pytest.raises(ValueError, match="schedule='linear'"):
        lr_factor("linear", 0, total)


def test_weight_decay_skips_norms_and_biases():
    model = build_model("cifar_alexnet_small")
    decay, no_decay = param_groups(model, 5e-4)
    assert all(p.ndim > 1 for p in decay["params"]) and all(p.ndim == 1 for p in no_decay["params"])
    assert no_decay["weight_decay"] == 0 and len(no_decay["params"]) > 0
    everything, nothing = param_groups(model, 5e-4, decay_norm_and_bias=True)
    assert len(nothing["params"]) == 0 and len(everything["params"]) == len(list(model.parameters()))


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_adam_is_fused_on_cpu_and_matches_the_reference_update(optimizer):
    # The fused kernel is chosen for memory (notebook 03's seed timing on a 2 GB machine); it must be
    # the same algorithm as torch's reference implementation, L2 vs decoupled weight decay included.
    # A linear model keeps every gradient well away from zero, where Adam amplifies rounding differences.
    recipe = tiny_recipe(optimizer=optimizer, lr=1e-2, weight_decay=0.5)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(64, 20, generator=gen), torch.randint(0, 10, (64,), generator=gen)
    models = []
    for fused in (True, False):
        torch.manual_seed(0)
        model = torch.nn.Linear(20, 10)
        opt = make_optimizer(model, recipe)
        assert opt.defaults["fused"] is True
        if not fused:
            groups = param_groups(model, recipe.weight_decay, recipe.decay_norm_and_bias)
            opt = type(opt)(groups, lr=recipe.lr, betas=tuple(recipe.betas), foreach=False)
            assert all(not g["fused"] for g in opt.param_groups)
        for _ in range(5):
            opt.zero_grad()
            compute_loss("ce", model(x), y).backward()
            opt.step()
        models.append(model)
    torch.testing.assert_close(models[0].state_dict(), models[1].state_dict(), rtol=1e-5, atol=1e-6)
    torch.manual_seed(0)
    assert (torch.nn.Linear(20, 10).weight - models[0].weight).abs().max() > 0.03  # five steps of lr 1e-2 moved it


def test_amp_choice():
    cpu = torch.device("cpu")
    assert amp_dtype("auto", cpu) is None and amp_dtype("off", cpu) is None
    assert amp_dtype("fp16", cpu) == torch.float16


@pytest.mark.parametrize("changes, match", [
    ({"optimizer": "rmsprop"}, "optimizer='rmsprop'.*sgd, adam, adamw"),
    ({"lr": -1.0}, "lr must be positive"),
    ({"epochs": 0}, "epochs must be positive"),
    ({"batch_size": 0}, "batch_size must be positive"),
    ({"momentum": 1.5}, r"momentum must lie in \[0, 1\)"),
    ({"betas": (0.9, 1.2)}, "Adam has betas, not momentum"),
    ({"schedule": "warmup"}, "schedule='warmup'"),
    ({"amp": "fp8"}, "amp='fp8'"),
    ({"train_limit": 0}, "train_limit"),
    ({"colour": "red"}, r"unknown recipe field\(s\) \['colour'\]"),
])
def test_impossible_recipes_are_rejected(changes, match):
    with pytest.raises(ValueError, match=match):
        tiny_recipe(**changes)


def test_named_recipes_and_reduced_mode(monkeypatch):
    monkeypatch.setenv("ALEXNET_REDUCED", "1")
    reduced = get_recipe("cpu")
    assert reduced.epochs == REDUCED["epochs"] and reduced.train_limit == REDUCED["train_limit"]
    assert get_recipe("cpu", epochs=5).epochs == 5
    monkeypatch.setenv("ALEXNET_REDUCED", "0")
    monkeypatch.setenv("CI", "true")
    assert get_recipe("cpu").train_limit is None  # our variable wins over CI
    upstream = get_recipe("upstream")
    assert (upstream.model, upstream.optimizer, upstream.lr, upstream.batch_size, upstream.loss, upstream.epochs) == (
        "upstream_3conv", "adam", 1e-4, 128, "bce_softmax", 20)
    with pytest.raises(ValueError, match="unknown recipe 'fast'.*upstream, cpu, cpu_long, cpu_v1, gpu"):
        get_recipe("fast")


def test_the_upstream_model_is_timed_at_its_own_batch_on_a_gpu_and_a_smaller_one_on_a_cpu():
    assert upstream_timing_batch("cpu") == 16
    assert upstream_timing_batch("cuda") == 128


def test_get_recipe_returns_a_copy_validated_once(monkeypatch):
    import helpers.training.recipes as recipes

    calls = []
    real = recipes.check_recipe
    monkeypatch.setattr(recipes, "check_recipe", lambda r: (calls.append(r.name), real(r))[1])
    recipe = get_recipe("cpu", reduced=True, lr=0.3, epochs=4)
    assert (recipe.lr, recipe.epochs, recipe.train_limit) == (0.3, 4, REDUCED["train_limit"])
    assert calls == ["cpu"]  # one validation for the named recipe, reduced sizes and overrides together
    recipe.lr = 99.0
    assert get_recipe("cpu", reduced=False).lr == 0.2  # the registry's recipe is never handed out


# ---------------------------------------------------------------- command line


def cli(cifar_root, tmp_path, *extra):
    return train_command(["--data-root", str(cifar_root), "--no-download", "--run-dir", str(tmp_path / "run"),
                 "--batch-size", "16", "--eval-limit", "20", "--no-progress", "--amp", "off", *extra])


def test_cli_end_to_end_and_resume(cifar_root, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALEXNET_REDUCED", "1")
    assert cli(cifar_root, tmp_path, "--epochs", "2") == 0
    out = capsys.readouterr().out
    assert "device=cpu" in out and "REDUCED MODE" in out and "epoch   2:" in out and "done: test accuracy" in out
    run_dir = tmp_path / "run"
    for name in ("config.json", "history.json", "history.csv", "checkpoint.pt", "metrics.json"):
        assert (run_dir / name).is_file(), name
    assert len(json.loads((run_dir / "history.json").read_text())) == 2
    # Without --resume an existing run is protected; --resume with other settings is another run: refused, and
    # nothing in the folder changes.
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    assert cli(cifar_root, tmp_path, "--epochs", "3") == 2
    assert "--resume" in capsys.readouterr().out
    assert cli(cifar_root, tmp_path, "--epochs", "3", "--resume") == 2
    out = capsys.readouterr().out
    assert "epochs: checkpoint 2, asked 3" in out and "another --run-dir" in out
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before
    # The same flags, or none at all (the checkpoint's own recipe and seed), continue it.
    assert cli(cifar_root, tmp_path, "--epochs", "2", "--resume") == 0
    assert train_command(["--data-root", str(cifar_root), "--no-download", "--run-dir", str(run_dir), "--resume",
                 "--no-progress"]) == 0
    assert "with its own recipe 'cpu' and seed 0" in capsys.readouterr().out
    assert [r["epoch"] for r in json.loads((run_dir / "history.json").read_text())] == [1, 2]


def test_resume_without_a_checkpoint_says_so_and_writes_nothing(cifar_root, tmp_path, capsys):
    assert cli(cifar_root, tmp_path, "--resume") == 2
    assert "holds no checkpoint.pt, so there is nothing to continue" in capsys.readouterr().out
    assert not (tmp_path / "run").exists()


def test_a_second_run_into_a_busy_run_folder_is_refused_with_the_holders_pid(cifar_root, tmp_path, capsys):
    from helpers.plumbing.files import exclusive_lock

    (tmp_path / "run").mkdir()
    with exclusive_lock(tmp_path / "run" / ".lock", "the run folder"):
        import subprocess
        import sys

        done = subprocess.run([sys.executable, "-m", "helpers.train", "--data-root", str(cifar_root), "--no-download",
                               "--run-dir", str(tmp_path / "run"), "--epochs", "1"], capture_output=True, text=True,
                              timeout=120)
    assert done.returncode == 2 and f"in use by process {os.getpid()}" in done.stdout
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [".lock"]  # nothing else written
    # A lock whose holder died is no lock: the kernel released it with the process.
    assert cli(cifar_root, tmp_path, "--epochs", "1") == 0


def test_bad_devices_batches_and_checkpoints_end_in_clear_errors(cifar_root, tmp_path, capsys):
    assert cli(cifar_root, tmp_path, "--device", "tpu") == 2
    assert "'tpu' is not a device name" in capsys.readouterr().out
    assert cli(cifar_root, tmp_path / "b", "--batch-size", "100000", "--epochs", "1") == 2
    assert re.search(r"larger than the \d+ training images", capsys.readouterr().out)
    assert not (tmp_path / "b" / "run").exists()  # refused before anything was written
    (tmp_path / "bare").mkdir()
    torch.save(build_model("cifar_alexnet_small").state_dict(), tmp_path / "bare" / "checkpoint.pt")
    assert train_command(["--data-root", str(cifar_root), "--no-download", "--run-dir", str(tmp_path / "bare"), "--resume"]) == 2
    assert "not a whole checkpoint of this course's engine" in capsys.readouterr().out
    with pytest.raises(TrainingError, match="bare state_dict"):
        load_checkpoint(tmp_path / "bare" / "checkpoint.pt", build_model("cifar_alexnet_small"))


def test_cli_errors(cifar_root, tmp_path, capsys):
    assert cli(cifar_root, tmp_path, "--model", "resnet50") == 2
    assert "unknown" in capsys.readouterr().out.lower()
    assert train_command(["--data-root", str(tmp_path / "nothing"), "--no-download", "--run-dir", str(tmp_path / "r")]) == 2
    assert "CIFAR10_ROOT" in capsys.readouterr().out
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    assert train_command(["--data-root", str(cifar_root), "--run-dir", str(blocked / "run")]) == 2
    assert "cannot create the run folder" in capsys.readouterr().out


def test_cli_help_documents_every_option(capsys):
    with pytest.raises(SystemExit) as exit_:
        train_command(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--recipe", "--model", "--epochs", "--lr", "--resume", "--amp", "--loss", "--run-dir"):
        assert option in text


@pytest.mark.skipif(real_cifar_root() is None, reason="needs the prepared CIFAR-10 copy in $CIFAR10_ROOT")
def test_cli_on_the_prepared_copy_in_reduced_mode(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ALEXNET_REDUCED", "1")
    code = train_command(["--data-root", str(real_cifar_root()), "--no-download", "--run-dir", str(tmp_path / "real"),
                 "--no-progress", "--recipe", "cpu"])
    assert code == 0
    metrics = json.loads((tmp_path / "real" / "metrics.json").read_text())
    # Two reduced epochs on 1,024 real images already learn something: above 10% chance.
    assert metrics["epoch"] == 2 and metrics["test_acc"] > 13 and metrics["val_acc"] > 13
    assert "REDUCED MODE" in capsys.readouterr().out
