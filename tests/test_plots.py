"""Training-curve plots draw the numbers they are given (helpers/training/plots.py)."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402

from helpers.training import plot_history  # noqa: E402

HISTORY = [{"epoch": 1, "train_loss": 2.0, "val_loss": 1.6, "train_acc": 30.0, "val_acc": 40.0},
           {"epoch": 2, "train_loss": 1.2, "val_loss": 1.1, "train_acc": 60.0, "val_acc": 62.0}]


def lines(ax) -> dict[str, list[float]]:
    return {line.get_label(): list(line.get_ydata()) for line in ax.get_lines()}


def test_history_plots_train_and_validation_curves():
    fig = plot_history(HISTORY, title="run")
    loss, acc = fig.axes
    assert lines(loss) == {"train": [2.0, 1.2], "validation": [1.6, 1.1]}
    assert lines(acc) == {"train": [30.0, 60.0], "validation": [40.0, 62.0]}
    assert fig._suptitle.get_text() == "run"
    plt.close(fig)


def test_history_with_a_loss_floor_adds_the_loss_above_it():
    fig = plot_history(HISTORY, loss_floor=0.5)
    curves = lines(fig.axes[0])
    assert curves["train - floor"] == pytest.approx([1.5, 0.7])
    assert curves["label-smoothing floor 0.50"] == [0.5, 0.5]
    plt.close(fig)


def test_history_monitored_on_test_says_so():
    history = [{"epoch": 1, "train_loss": 2.0, "test_loss": 1.6, "train_acc": 30.0, "test_acc": 40.0, "test_acc_tta": 41.0}]
    fig = plot_history(history)
    assert set(lines(fig.axes[1])) == {"train", "test", "test, flip-TTA"}
    plt.close(fig)
