"""The ablation study's spec (helpers/ablation.py): one change per variant, groups and their references, recipes."""

from __future__ import annotations

import pytest

from helpers.ablation import BASELINE, GROUPS, VARIANTS, select_variants, variant_by_name, variant_recipe
from helpers.ablation.spec import SWEEP_EPOCHS, Variant
from helpers.course import REDUCED
from helpers.training import get_recipe
from helpers.training.recipes import recipe_key

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
    with pytest.raises(ValueError, match="unknown variant 'colour'; choose one of baseline, conv_3"):
        variant_by_name("colour")


def test_baseline_is_the_cpu_recipe_at_the_sweep_budget_and_reduced_mode_shrinks_it():
    full = variant_recipe(BASELINE, full=True)
    cpu = get_recipe("cpu", reduced=False, epochs=SWEEP_EPOCHS)
    assert {k: v for k, v in full.to_dict().items() if k != "name"} == {k: v for k, v in cpu.to_dict().items() if k != "name"}
    small = variant_recipe(BASELINE, full=False)
    assert all(getattr(small, k) == v for k, v in REDUCED.items())
    assert recipe_key(small) != recipe_key(full)
    upstream227 = variant_recipe(variant_by_name("input_227"), full=True)
    assert upstream227.model == "upstream_3conv" and upstream227.model_overrides == {} and upstream227.loss == "ce"


def test_reduced_mode_decides_when_full_is_not_given(monkeypatch):
    monkeypatch.setenv("ALEXNET_REDUCED", "1")
    assert variant_recipe(BASELINE) == variant_recipe(BASELINE, full=False)
    monkeypatch.setenv("ALEXNET_REDUCED", "0")
    assert variant_recipe(BASELINE) == variant_recipe(BASELINE, full=True)


def test_select_variants_adds_the_references():
    names = [v.name for v in select_variants(["input"])]
    assert names == ["baseline", "conv_3", "input_227"]
    assert [v.name for v in select_variants(["loss_adam"])] == ["baseline", "adam", "adam_softmax_ce", "adam_bce_softmax"]
    assert len(select_variants()) == len(VARIANTS)
    with pytest.raises(ValueError, match="unknown group 'colour', 'size'; choose from conv, fc"):
        select_variants(["colour", "loss", "size"])
    with pytest.raises(ValueError, match="at least one group"):
        select_variants([])


def test_variant_with_an_unknown_field_is_rejected():
    with pytest.raises(ValueError, match="unknown recipe field 'colour'"):
        variant_recipe(Variant("x", "loss", "x", {"colour": "red"}), full=False)


def test_a_cpu_leaves_out_the_gpu_only_groups():
    from helpers.ablation import groups_for_device
    from helpers.ablation.spec import SLOW_ON_CPU_GROUPS

    assert groups_for_device("cuda") == list(GROUPS)
    for device_type in ("cpu", "mps"):
        groups = groups_for_device(device_type)
        assert "input" in SLOW_ON_CPU_GROUPS and "input" not in groups and len(groups) == len(GROUPS) - len(SLOW_ON_CPU_GROUPS)


def test_paired_difference_of_any_two_variants_matches_the_summary_and_names_bad_input():
    import json
    import math
    from pathlib import Path

    from helpers.ablation import paired_difference, summarize_sweep

    records = [r for r in json.loads((Path(__file__).resolve().parent.parent / "results" / "ablations.json").read_text())
               if not r.get("reduced")]
    table = summarize_sweep(records)
    for _, row in table[table["verdict"] != "reference"].iterrows():
        reference = GROUPS[row["group"]].reference
        got = paired_difference(records, row["variant"], reference)
        assert got["verdict"] == row["verdict"] and (math.isnan(row["delta"]) or abs(got["delta"] - row["delta"]) < 1e-9)
    upstream = paired_difference(records, "bce_softmax", "softmax_ce")  # upstream's own comparison, under SGD
    assert upstream["paired_seeds"] == 3 and upstream["delta_low"] > 0 and upstream["verdict"] == "better"
    with pytest.raises(ValueError, match="unknown variant 'magic'"):
        paired_difference(records, "magic", "baseline")
