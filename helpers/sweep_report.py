"""Reading a sweep's records: runs per group, mean ± std per variant, a verdict against the reference, a chart."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import pandas as pd

from .ablation import GROUPS, VARIANTS, variant_by_name
from .checks import unknown_names

if TYPE_CHECKING:
    from matplotlib.figure import Figure

SUMMARY_COLUMNS = ["group", "variant", "label", "runs", "diverged", "test_acc_mean", "test_acc_std", "test_acc_tta_mean",
                   "test_acc_tta_std", "train_seconds_mean", "flops_per_image", "params", "test acc % (mean ± std)"]


def _check_one_mode(records: Sequence[dict]) -> None:
    modes = {bool(r.get("reduced")) for r in records}
    if len(modes) > 1:
        raise ValueError("the records mix reduced (smoke-test) and full runs; filter them first, "
                         "e.g. [r for r in records if not r['reduced']]")


def group_runs(records: Sequence[dict], groups: Iterable[str] | None = None) -> list[dict]:
    """One row per run and group it belongs to; a reference run appears in each group it anchors (summarize_sweep, plot_sweep)."""
    _check_one_mode(records)
    names = list(GROUPS) if groups is None else list(groups)
    unknown_names("group", names, GROUPS)
    rows = []
    for g in names:
        group = GROUPS[g]
        members = [group.reference] + [v.name for v in VARIANTS if v.group == g]
        for order, name in enumerate(members):
            label = group.reference_label if order == 0 else variant_by_name(name).label
            for r in records:
                if r["variant"] == name:
                    rows.append({**r, "group": g, "group_title": group.title, "label": label,
                                 "is_reference": order == 0, "order": order})
    return rows


def summarize_sweep(records: Sequence[dict], groups: Iterable[str] | None = None) -> pd.DataFrame:
    """Mean ± std of test accuracy (and flip-TTA accuracy, training seconds) per group and variant (notebook 05).

    Only groups with at least one recorded variant appear. Diverged runs are counted in
    `diverged` and left out of the means. `verdict` compares each variant with its
    group's reference.
    """
    rows = group_runs(records, groups)
    frame = pd.DataFrame(rows)
    if rows:
        frame = frame[frame.groupby("group")["is_reference"].transform(lambda s: (~s).any())]
    if frame.empty:  # no records, or e.g. a shard that holds only reference runs so far
        return pd.DataFrame(columns=SUMMARY_COLUMNS + ["delta_vs_reference", "verdict"])
    keys = ["group", "order", "variant"]
    table = pd.DataFrame([_variant_row(runs) | dict(zip(keys, key)) for key, runs in frame.groupby(keys, sort=False)])
    position = {g: i for i, g in enumerate(GROUPS)}
    table = table.sort_values(["group", "order"], key=lambda s: s.map(position) if s.name == "group" else s)
    table = table.reset_index(drop=True)
    deltas, verdicts = [], []
    for _, row in table.iterrows():
        ref = table[(table["group"] == row["group"]) & (table["order"] == 0)]
        delta, verdict = _verdict(row, ref.iloc[0]) if len(ref) else (float("nan"), "no reference run yet")
        deltas.append(delta)
        verdicts.append(verdict)
    table["delta_vs_reference"] = deltas
    table["verdict"] = verdicts
    return table[SUMMARY_COLUMNS + ["delta_vs_reference", "verdict"]]


def _variant_row(runs: pd.DataFrame) -> dict:
    """The summary of one variant's runs in one group: counts, means and spreads over seeds, its cost."""
    ok = runs[runs["status"] == "ok"]
    acc = pd.to_numeric(ok["test_acc"], errors="coerce")
    tta = pd.to_numeric(ok["test_acc_tta"], errors="coerce")
    mean, std = acc.mean(), _spread(acc)
    return {
        "label": runs["label"].iloc[0], "runs": len(runs), "diverged": int((runs["status"] != "ok").sum()),
        "test_acc_mean": mean, "test_acc_std": std, "test_acc_tta_mean": tta.mean(), "test_acc_tta_std": _spread(tta),
        "train_seconds_mean": pd.to_numeric(ok["train_seconds"], errors="coerce").mean(),
        "flops_per_image": runs["flops_per_image"].iloc[0], "params": runs["params"].iloc[0],
        "test acc % (mean ± std)": _mean_std(mean, std, len(acc)),
    }


def _spread(values: pd.Series) -> float:
    """Sample standard deviation over seeds; NaN for a single run, which has no spread."""
    return values.std(ddof=1) if len(values) > 1 else float("nan")


def _verdict(row: pd.Series, ref: pd.Series) -> tuple[float, str]:
    """Difference from the reference and whether it exceeds twice the seeds' combined spread."""
    if row["order"] == 0:
        return 0.0, "reference"
    delta = row["test_acc_mean"] - ref["test_acc_mean"]
    if math.isnan(delta):
        return delta, "diverged"
    noise = math.hypot(row["test_acc_std"], ref["test_acc_std"])
    if math.isnan(noise):
        return delta, "one seed: no spread to compare with"
    if abs(delta) > 2 * noise:
        return delta, "better" if delta > 0 else "worse"
    return delta, "within noise"


def _mean_std(mean: float, std: float, n: int) -> str:
    if n == 0 or math.isnan(mean):
        return "diverged"
    return f"{mean:.2f}" if n == 1 or math.isnan(std) else f"{mean:.2f} ± {std:.2f}"


def plot_sweep(records: Sequence[dict], groups: Iterable[str] | None = None, ncols: int = 3, metric: str = "test_acc") -> Figure:
    """Bar chart per group: mean test accuracy per variant, ±1 std error bars over seeds, a dotted chance line (notebook 05)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    frame = pd.DataFrame(group_runs(records, groups))
    if frame.empty:
        raise ValueError("no records to plot for these groups")
    frame = frame[frame["status"] == "ok"]
    shown = [g for g in GROUPS if g in set(frame["group"]) and (~frame[frame["group"] == g]["is_reference"]).any()]
    if not shown:
        raise ValueError("no group has both its reference and a variant recorded")
    ncols = min(ncols, len(shown))
    nrows = -(-len(shown) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax, g in zip(axes.flat, shown):
        part = frame[frame["group"] == g].sort_values("order")
        part = part.assign(**{metric: pd.to_numeric(part[metric])})
        sns.barplot(data=part, x="label", y=metric, hue="is_reference", errorbar="sd", capsize=0.15, ax=ax,
                    palette={True: "#9e9e9e", False: "#4c72b0"}, legend=False)
        sns.stripplot(data=part, x="label", y=metric, color="black", size=3, ax=ax)
        if metric.startswith("test_acc"):
            ax.axhline(10.0, color="gray", ls=":", lw=1)  # chance: one class in ten
        ax.set(title=GROUPS[g].title, xlabel="", ylabel="test accuracy (%)" if metric.startswith("test_acc") else metric)
        ax.tick_params(axis="x", labelrotation=20)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.tight_layout()
    return fig
