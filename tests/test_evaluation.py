"""helpers/evaluation.py: metrics against hand-computed values, calibration on synthetic predictions, pictures (notebook 04)."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from helpers.evaluation import (  # noqa: E402
    calibration_bins,
    confident_mistakes,
    confusion_matrix,
    conv_activations,
    expected_calibration_error,
    filter_grid,
    metrics_table,
    per_class_metrics,
    plot_confusion_matrix,
    plot_reliability_diagram,
    show_predictions,
    top_confusions,
    top_k_accuracy,
)
from helpers.models import build_model  # noqa: E402

# 3 classes, 8 images; hand-counted below
LABELS = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2])
PREDS = torch.tensor([0, 0, 1, 1, 2, 2, 2, 0])


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def one_hot_probs(preds: torch.Tensor, num_classes: int, confidence: torch.Tensor | float) -> torch.Tensor:
    """Rows with `confidence` on the predicted class and the rest spread evenly."""
    conf = torch.as_tensor(confidence, dtype=torch.float64).expand(len(preds)).clone()
    probs = ((1 - conf) / (num_classes - 1))[:, None].repeat(1, num_classes)
    probs[torch.arange(len(preds)), preds] = conf
    return probs


def test_confusion_matrix_counts_known_predictions():
    cm = confusion_matrix(LABELS, PREDS, 3)
    assert cm.tolist() == [[2, 1, 0], [0, 1, 1], [1, 0, 2]]
    assert cm.dtype == torch.int64
    assert int(cm.sum()) == len(LABELS)


def test_confusion_matrix_rejects_bad_input():
    with pytest.raises(ValueError, match="equal length"):
        confusion_matrix(LABELS, PREDS[:-1], 3)
    with pytest.raises(ValueError, match="preds must lie in 0..2"):
        confusion_matrix(LABELS, torch.tensor([0, 0, 0, 1, 1, 2, 2, 3]), 3)
    with pytest.raises(ValueError, match="integer"):
        confusion_matrix(LABELS.float(), PREDS, 3)


def test_precision_recall_f1_match_hand_values():
    m = per_class_metrics(confusion_matrix(LABELS, PREDS, 3))
    # class 0: tp 2, predicted 3, support 3; class 1: tp 1, predicted 2, support 2; class 2: tp 2, predicted 3, support 3
    assert m["precision"].tolist() == pytest.approx([2 / 3, 1 / 2, 2 / 3])
    assert m["recall"].tolist() == pytest.approx([2 / 3, 1 / 2, 2 / 3])
    assert m["f1"].tolist() == pytest.approx([2 / 3, 1 / 2, 2 / 3])
    assert m["support"].tolist() == [3, 2, 3]


def test_precision_and_recall_differ_and_empty_class_gives_zero():
    cm = torch.tensor([[3, 1, 0], [0, 0, 0], [2, 0, 0]])  # class 1 never occurs, class 2 never predicted
    m = per_class_metrics(cm)
    assert m["precision"].tolist() == pytest.approx([3 / 5, 0.0, 0.0])
    assert m["recall"].tolist() == pytest.approx([3 / 4, 0.0, 0.0])
    assert m["f1"][0].item() == pytest.approx(2 * 0.6 * 0.75 / 1.35)
    assert not torch.isnan(m["f1"]).any()


def test_metrics_table_has_macro_row():
    table = metrics_table(confusion_matrix(LABELS, PREDS, 3), ["a", "b", "c"])
    assert list(table.index) == ["a", "b", "c", "macro average"]
    assert table.loc["macro average", "recall"] == pytest.approx((2 / 3 + 1 / 2 + 2 / 3) / 3)
    assert table.loc["macro average", "support"] == 8
    with pytest.raises(ValueError, match="class names"):
        metrics_table(confusion_matrix(LABELS, PREDS, 3), ["a", "b"])


def test_top_confusions_orders_off_diagonal_cells():
    cm = torch.tensor([[50, 7, 1], [2, 40, 0], [9, 3, 30]])
    rows = top_confusions(cm, ["a", "b", "c"], k=3)
    assert [(r["true"], r["predicted"], r["count"]) for r in rows] == [("c", "a", 9), ("a", "b", 7), ("c", "b", 3)]
    assert rows[0]["share_of_true"] == pytest.approx(9 / 42)
    # zero cells are never reported as confusions
    assert len(top_confusions(torch.eye(3, dtype=torch.long) * 5, k=4)) == 0


def test_top_k_accuracy_hand_example():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.1, 0.2, 0.7], [0.2, 0.5, 0.3]])
    labels = torch.tensor([1, 2, 0])
    assert top_k_accuracy(probs, labels, 1) == pytest.approx(100 / 3)  # only image 2
    assert top_k_accuracy(probs, labels, 2) == pytest.approx(200 / 3)  # image 3's class is last
    assert top_k_accuracy(probs, labels, 3) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="k must lie"):
        top_k_accuracy(probs, labels, 4)


def test_confident_mistakes_are_wrong_and_sorted():
    probs = one_hot_probs(PREDS, 3, torch.tensor([0.9, 0.8, 0.95, 0.6, 0.7, 0.5, 0.9, 0.99]))
    idx = confident_mistakes(probs, LABELS, k=10)
    assert idx.tolist() == [7, 2, 4]  # the three wrong ones, by confidence 0.99, 0.95, 0.7
    assert confident_mistakes(probs, LABELS, k=1).tolist() == [7]


def test_ece_of_calibrated_predictions_is_near_zero():
    gen = torch.Generator().manual_seed(0)
    n, c = 200_000, 10
    conf = 0.2 + 0.8 * torch.rand(n, generator=gen, dtype=torch.float64)
    preds = torch.randint(0, c, (n,), generator=gen)
    right = torch.rand(n, generator=gen, dtype=torch.float64) < conf  # correct with probability = confidence
    labels = torch.where(right, preds, (preds + 1 + torch.randint(0, c - 1, (n,), generator=gen)) % c)
    probs = one_hot_probs(preds, c, conf)
    assert expected_calibration_error(probs, labels) < 0.01


def test_ece_of_overconfident_predictions_is_large():
    n = 1000
    preds = torch.zeros(n, dtype=torch.long)
    labels = torch.arange(n) % 2  # half right
    probs = one_hot_probs(preds, 2, 0.99)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.49, abs=1e-9)


def test_ece_and_bins_hand_example():
    # two confidence groups: 0.85 (3 of 4 right) and 0.65 (1 of 2 right)
    preds = torch.zeros(6, dtype=torch.long)
    labels = torch.tensor([0, 0, 0, 1, 0, 1])
    probs = one_hot_probs(preds, 2, torch.tensor([0.85, 0.85, 0.85, 0.85, 0.65, 0.65]))
    bins = calibration_bins(probs, labels, n_bins=10)
    filled = [b for b in bins if b["count"]]
    assert [(b["lo"], b["count"]) for b in filled] == [(pytest.approx(0.6), 2), (pytest.approx(0.8), 4)]
    assert filled[1]["accuracy"] == pytest.approx(0.75) and filled[1]["confidence"] == pytest.approx(0.85)
    assert expected_calibration_error(probs, labels, 10) == pytest.approx(4 / 6 * 0.1 + 2 / 6 * 0.15)
    assert sum(b["count"] for b in calibration_bins(probs, labels, 15)) == 6
    assert math.isnan(bins[0]["accuracy"])
    with pytest.raises(ValueError, match="n_bins"):
        calibration_bins(probs, labels, 0)


def test_calibration_bins_are_closed_on_the_right():
    # Guo et al.'s bins are (lo, hi]: a confidence of exactly 0.5 falls in the first of two bins, 1.0 in the last
    probs = one_hot_probs(torch.zeros(3, dtype=torch.long), 2, torch.tensor([0.5, 0.5, 1.0]))
    counts = [b["count"] for b in calibration_bins(probs, torch.zeros(3, dtype=torch.long), n_bins=2)]
    assert counts == [2, 1]


def test_calibration_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="labels must have shape"):
        expected_calibration_error(torch.full((4, 3), 1 / 3), torch.zeros(3, dtype=torch.long))


def test_plots_draw_what_they_are_given():
    cm = confusion_matrix(LABELS, PREDS, 3)
    fig = plot_confusion_matrix(cm, ["a", "b", "c"], normalize=False)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts == ["2", "1", "0", "0", "1", "1", "1", "0", "2"]
    probs = one_hot_probs(PREDS, 3, 0.8)
    fig = plot_reliability_diagram(calibration_bins(probs, LABELS, 15), 0.1)
    assert "ECE 10.00%" in fig.axes[0].get_title()
    images = torch.zeros(3, 3, 8, 8, dtype=torch.uint8)
    fig = show_predictions(images, [0, 1, 2], probs[:3], ["a", "b", "c"], ncols=3)
    assert [ax.get_title() for ax in fig.axes] == ["a→a (0.80)", "b→a (0.80)", "c→b (0.80)"]


def test_filter_grid_and_feature_maps_shapes():
    torch.manual_seed(0)
    model = build_model("cifar_alexnet_small")
    fig = filter_grid(model.features[0].weight, ncols=8)
    image = fig.axes[0].images[0].get_array()
    assert image.shape == (4 * 4 + 1, 8 * 4 + 1, 3)  # 32 filters of 3x3 with a 1-pixel border
    assert image.min() >= 0 and image.max() <= 1
    maps = conv_activations(model, torch.randn(3, 32, 32), num_convs=2)
    assert list(maps) == ["conv1", "conv2"]
    assert maps["conv1"].shape == (32, 32, 32)  # after ReLU, before the pooling
    assert maps["conv2"].shape == (96, 16, 16)
    assert (maps["conv1"] >= 0).all()
    with pytest.raises(ValueError, match="num_convs"):
        conv_activations(model, torch.randn(3, 32, 32), num_convs=9)


@pytest.mark.parametrize("training", [True, False])
def test_conv_activations_run_in_eval_mode_and_restore_the_mode(training):
    torch.manual_seed(0)
    model = build_model("cifar_alexnet_small").train(training)
    image = torch.randn(3, 32, 32)
    first = conv_activations(model, image, num_convs=1)["conv1"]
    assert model.training is training
    with torch.no_grad():  # eval mode: BatchNorm uses its running statistics, so one image is deterministic
        expected = model.eval().features[:3](image[None])[0]
    assert torch.equal(first, expected)
