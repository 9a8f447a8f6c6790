"""Reading a sweep's records: runs per group, mean ± std per variant, a verdict against the reference, a chart."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import pandas as pd

from ..plumbing.checks import unknown_names
from .spec import GROUPS, VARIANTS, variant_by_name

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_SUMMARY_COLUMNS = ["group", "variant", "label", "runs", "collapsed", "diverged", "val_acc_mean", "val_acc_std",
                   "test_acc_mean", "test_acc_std", "paired_seeds", "delta", "delta_low", "delta_high", "verdict",
                   "train_seconds_mean", "flops_per_image", "params"]
# Two-sided 95% quantiles of Student's t for 1..30 degrees of freedom (any statistics table); 1.96 beyond.
_METRIC = "val_acc"  # the split every verdict is made on
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
        2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def _check_one_mode(records: Sequence[dict]) -> None:
    modes = {bool(r.get("reduced")) for r in records}
    if len(modes) > 1:
        raise ValueError("the records mix reduced (smoke-test) and full runs; filter them first, "
                         "e.g. [r for r in records if not r['reduced']]")


def _group_runs(records: Sequence[dict], groups: Iterable[str] | None = None) -> list[dict]:
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
    """Per group and variant: runs, collapsed and diverged counts, mean ± std, paired Δ vs the reference (notebook 05).

    Verdicts are made on validation accuracy, never on test; collapsed and diverged runs are counted, never averaged in.
    """
    rows = _group_runs(records, groups)
    frame = pd.DataFrame(rows)
    if rows:
        frame = frame[frame.groupby("group")["is_reference"].transform(lambda s: (~s).any())]
    if frame.empty:  # no records, or e.g. a shard that holds only reference runs so far
        return pd.DataFrame(columns=_SUMMARY_COLUMNS)
    table = []
    for (group, order, variant), runs in frame.groupby(["group", "order", "variant"], sort=False):
        reference = frame[(frame["group"] == group) & (frame["order"] == 0)]
        row = {"group": group, "order": order, "variant": variant, **_variant_row(runs)}
        table.append(row | _paired_difference(runs, reference, is_reference=order == 0))
    position = {g: i for i, g in enumerate(GROUPS)}
    table = pd.DataFrame(table).sort_values(["group", "order"], key=lambda s: s.map(position) if s.name == "group" else s)
    return table.reset_index(drop=True)[_SUMMARY_COLUMNS]


def _ok(runs: pd.DataFrame) -> pd.DataFrame:
    return runs[runs["status"] == "ok"]


def _variant_row(runs: pd.DataFrame) -> dict:
    """The summary of one variant's runs in one group: counts, means and spreads over seeds, its cost."""
    ok = _ok(runs)
    acc = pd.to_numeric(ok.get(_METRIC), errors="coerce") if _METRIC in ok else pd.Series(dtype=float)
    test = pd.to_numeric(ok["test_acc"], errors="coerce")
    return {"label": runs["label"].iloc[0], "runs": len(runs), "collapsed": int((runs["status"] == "collapsed").sum()),
            "diverged": int((runs["status"] == "diverged").sum()), f"{_METRIC}_mean": acc.mean(), f"{_METRIC}_std": _spread(acc),
            "test_acc_mean": test.mean(), "test_acc_std": _spread(test),
            "train_seconds_mean": pd.to_numeric(ok["train_seconds"], errors="coerce").mean(),
            "flops_per_image": runs["flops_per_image"].iloc[0], "params": runs["params"].iloc[0]}


def _spread(values: pd.Series) -> float:
    """Sample standard deviation over seeds; NaN for a single run, which has no spread."""
    return values.std(ddof=1) if len(values) > 1 else float("nan")


def t95(degrees_of_freedom: int) -> float:
    """The two-sided 95% quantile of Student's t (1.96 beyond 30 degrees of freedom) (notebook 05)."""
    if not isinstance(degrees_of_freedom, int) or degrees_of_freedom < 1:
        raise ValueError(f"degrees of freedom must be a whole number >= 1, got {degrees_of_freedom!r}")
    return _T95[degrees_of_freedom - 1] if degrees_of_freedom <= len(_T95) else 1.96


def _paired_difference(runs: pd.DataFrame, reference: pd.DataFrame, is_reference: bool = False) -> dict:
    """Mean variant - reference over the seeds both ran, its 95% t-interval, a verdict (notebook 05's summarize_sweep)."""
    if is_reference:
        return {"paired_seeds": len(_ok(runs)), "delta": 0.0, "delta_low": 0.0, "delta_high": 0.0, "verdict": "reference"}
    mine = _ok(runs).set_index("seed")[_METRIC].astype(float)
    theirs = _ok(reference).set_index("seed")[_METRIC].astype(float)
    seeds = mine.index.intersection(theirs.index)
    diff = (mine[seeds] - theirs[seeds]).to_numpy()
    n = len(diff)
    if n == 0:
        verdict = ("no reference run yet" if reference.empty else "collapsed or diverged" if mine.empty
                   else "no paired seeds")
        return {"paired_seeds": 0, "delta": math.nan, "delta_low": math.nan, "delta_high": math.nan, "verdict": verdict}
    mean = float(diff.mean())
    if n == 1:
        return {"paired_seeds": 1, "delta": mean, "delta_low": math.nan, "delta_high": math.nan,
                "verdict": "one seed: no interval"}
    half = t95(n - 1) * float(diff.std(ddof=1)) / math.sqrt(n)
    low, high = mean - half, mean + half
    verdict = "within noise" if low <= 0 <= high else ("better" if low > 0 else "worse")
    return {"paired_seeds": n, "delta": mean, "delta_low": low, "delta_high": high, "verdict": verdict}


def paired_difference(records: Sequence[dict], variant: str, reference: str) -> dict:
    """`variant` minus `reference` in validation accuracy over the seeds both ran, as summarize_sweep pairs a variant
    with its group's reference, for any two variants: paired_seeds, delta, delta_low, delta_high, verdict (notebook 05).
    """
    _check_one_mode(records)
    for name in (variant, reference):
        variant_by_name(name)  # an unknown name fails here, with the choices
    columns = ["variant", "seed", "status", _METRIC]
    frame = pd.DataFrame([{key: r.get(key) for key in columns} for r in records], columns=columns)
    runs, theirs = frame[frame["variant"] == variant], frame[frame["variant"] == reference]
    if runs.empty:
        return {"paired_seeds": 0, "delta": math.nan, "delta_low": math.nan, "delta_high": math.nan,
                "verdict": f"no run of {variant} yet"}
    return _paired_difference(runs, theirs)


def plot_sweep(records: Sequence[dict], groups: Iterable[str] | None = None) -> Figure:
    """Bar chart per group: mean accuracy per variant, ±1 std error bars over seeds, a dotted chance line (notebook 05)."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    frame = pd.DataFrame(_group_runs(records, groups))
    if frame.empty:
        raise ValueError("no records to plot for these groups")
    frame = frame[frame["status"] == "ok"]
    shown = [g for g in GROUPS if g in set(frame["group"]) and (~frame[frame["group"] == g]["is_reference"]).any()]
    if not shown:
        raise ValueError("no group has both its reference and a variant recorded")
    ncols = min(3, len(shown))
    nrows = -(-len(shown) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.2 * nrows), squeeze=False)
    for ax, g in zip(axes.flat, shown):
        part = frame[frame["group"] == g].sort_values("order")
        part = part.assign(**{_METRIC: pd.to_numeric(part[_METRIC])})
        sns.barplot(data=part, x="label", y=_METRIC, hue="is_reference", errorbar="sd", capsize=0.15, ax=ax,
                    palette={True: "#9e9e9e", False: "#4c72b0"}, legend=False)
        sns.stripplot(data=part, x="label", y=_METRIC, color="black", size=3, ax=ax)
        ax.axhline(10.0, color="gray", ls=":", lw=1)  # chance: one class in ten
        ax.set(title=GROUPS[g].title, xlabel="", ylabel="validation accuracy (%)")
        ax.tick_params(axis="x", labelrotation=20)
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


_VERDICT_COLOURS = {"better": "tab:green", "worse": "tab:red", "within noise": "tab:gray"}


def plot_differences(table: pd.DataFrame) -> Figure:
    """Each variant's paired difference to its reference with its 95% interval, coloured by verdict (notebook 05)."""
    import matplotlib.pyplot as plt

    rows = table[(table["verdict"] != "reference") & table["delta"].notna()].iloc[::-1]
    if rows.empty:
        raise ValueError("no variant has a paired difference yet: record a reference run and a variant on the same seed")
    fig, ax = plt.subplots(figsize=(7.5, 0.32 * len(rows) + 1.2))
    rows = rows.assign(y=range(len(rows)))
    for verdict, part in rows.groupby("verdict"):
        colour = _VERDICT_COLOURS.get(verdict, "black")
        # An interval needs two paired seeds; with one seed only the point is drawn.
        low = (part["delta"] - part["delta_low"]).fillna(0).clip(lower=0)
        high = (part["delta_high"] - part["delta"]).fillna(0).clip(lower=0)
        ax.errorbar(part["delta"], part["y"], xerr=[low, high], fmt="o", color=colour, capsize=3)
    ax.axvline(0, color="black", lw=1)
    labels = [f"{GROUPS[g].title}: {label}" for g, label in zip(rows["group"], rows["label"])]
    ax.set_yticks(list(rows["y"]), labels)
    ax.set_xlabel("difference to the reference, validation accuracy (percentage points)")
    ax.grid(axis="x", alpha=0.3)
    handles = [plt.Line2D([], [], color=c, marker="o", ls="", label=v) for v, c in _VERDICT_COLOURS.items()]
    ax.legend(handles=handles, loc="lower left", fontsize=8)
    fig.tight_layout()
    return fig
