"""The speed helpers (helpers/perf.py): throughput, interleaved comparisons, FLOP counts and peaks."""

from __future__ import annotations

import pytest
import torch


def test_throughput_and_interleaved_comparison(monkeypatch):
    from helpers.speed import Setting, compare_throughput, throughput

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

    import helpers.speed.measure as perf

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
    from helpers.models import build_model, step_flops, total_flops
    from helpers.speed import cpu_peak_flops, gpu_peak_flops

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
