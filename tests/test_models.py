"""Tests for helpers.models: presets, every knob, validation, config round trip, summary."""

from __future__ import annotations

import functools
import json

import pytest
import torch
from torch import nn

from helpers.models import PRESETS, build_model, config_from_dict, count_parameters, total_flops
from helpers.models.alexnet import ModelConfig, model_config_dict, model_state, resolve_config
from helpers.models.summary import summarize


@functools.cache
def preset_model(name: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name).eval()


def count(model: nn.Module, kind: type) -> int:
    return sum(isinstance(m, kind) for m in model.modules())


# hand formulas, independent of the code under test
def conv(cin: int, cout: int, k: int, bias: bool = True) -> int:
    return cout * cin * k * k + (cout if bias else 0)


def bn(c: int) -> int:
    return 2 * c


def linear(i: int, o: int) -> int:
    return i * o + o


def cifar_params(channels: tuple[int, ...], fc: int) -> int:
    """BN after every 3x3 conv (no conv bias), 4x4 final map, two hidden FC layers."""
    ins = (3, *channels[:-1])
    convs = sum(conv(i, o, 3, bias=False) + bn(o) for i, o in zip(ins, channels))
    return convs + linear(channels[-1] * 16, fc) + linear(fc, fc) + linear(fc, 10)


UPSTREAM_HEAD = conv(3, 96, 11, bias=False) + bn(96) + conv(96, 256, 5, bias=False) + bn(256)
UPSTREAM_FC = linear(256 * 6 * 6, 4096) + linear(4096, 10)
EXPECTED_PARAMS = {
    "alexnet_paper": 58_322_314,
    "upstream_5conv": UPSTREAM_HEAD + conv(256, 384, 3) + conv(384, 384, 3) + conv(384, 256, 3) + UPSTREAM_FC,
    "upstream_4conv": UPSTREAM_HEAD + conv(256, 384, 3) + conv(384, 256, 3) + UPSTREAM_FC,
    "upstream_3conv": UPSTREAM_HEAD + conv(256, 256, 3) + UPSTREAM_FC,
    "cifar_alexnet": cifar_params((64, 192, 384, 256, 256), 1024),
    "cifar_alexnet_small": cifar_params((32, 96, 192, 128, 128), 256),
}


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_preset_forward_gives_one_logit_row_per_image(name):
    model = preset_model(name)
    size = PRESETS[name].input_size
    with torch.no_grad():
        out = model(torch.randn(2, 3, size, size))
    assert out.shape == (2, 10)
    assert isinstance(model.features, nn.Sequential)
    assert isinstance(model.classifier, nn.Sequential)
    assert isinstance(model.classifier[0], nn.Flatten)
    assert model.config == PRESETS[name]


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMS))
def test_preset_parameter_counts(name):
    assert count_parameters(preset_model(name)) == EXPECTED_PARAMS[name]


def test_paper_net_has_the_published_layout():
    paper = PRESETS["alexnet_paper"]
    assert paper.input_size == 227
    assert count(preset_model("alexnet_paper"), nn.LocalResponseNorm) == 2
    assert count(preset_model("alexnet_paper"), nn.BatchNorm2d) == 0
    pools = [m for m in preset_model("alexnet_paper").modules() if isinstance(m, nn.MaxPool2d)]
    assert [(p.kernel_size, p.stride) for p in pools] == [(3, 2)] * 3


def test_model_returns_logits_not_probabilities():
    torch.manual_seed(0)
    model = build_model("cifar_alexnet_small").eval()
    with torch.no_grad():
        out = model(torch.randn(4, 3, 32, 32))
    assert (out < 0).any()
    assert not torch.allclose(out.sum(dim=1), torch.ones(4), atol=1e-3)
    assert isinstance(model.classifier[-1], nn.Linear)
    assert count(model, nn.Softmax) == 0


@pytest.mark.parametrize("activation, kind", [("relu", nn.ReLU), ("leaky_relu", nn.LeakyReLU), ("gelu", nn.GELU)])
def test_activation_knob(activation, kind):
    model = build_model("cifar_alexnet_small", activation=activation)
    others = {nn.ReLU, nn.LeakyReLU, nn.GELU} - {kind}
    # one after each of the 5 convs and each of the 2 hidden FC layers
    assert count(model, kind) == 7
    assert all(count(model, other) == 0 for other in others)


@pytest.mark.parametrize(
    "norm, batch_norms, lrns, conv_bias", [("none", 0, 0, True), ("lrn", 0, 5, True), ("batch", 5, 0, False)]
)
def test_norm_knob(norm, batch_norms, lrns, conv_bias):
    model = build_model("cifar_alexnet_small", norm=norm)
    assert count(model, nn.BatchNorm2d) == batch_norms
    assert count(model, nn.LocalResponseNorm) == lrns
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert all((c.bias is not None) == conv_bias for c in convs)


def test_norm_layers_limits_the_norm_to_listed_convs():
    model = build_model("cifar_alexnet_small", norm="batch", norm_layers=(0, 1))
    assert count(model, nn.BatchNorm2d) == 2
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.bias is None for c in convs] == [True, True, False, False, False]


def test_batch_norm_goes_before_the_activation_and_lrn_after():
    bn_model = build_model("cifar_alexnet_small", norm="batch")
    assert [type(m) for m in bn_model.features[:3]] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    lrn_model = build_model("cifar_alexnet_small", norm="lrn")
    assert [type(m) for m in lrn_model.features[:3]] == [nn.Conv2d, nn.ReLU, nn.LocalResponseNorm]


@pytest.mark.parametrize("num_conv", [3, 4, 5])
def test_num_conv_knob(num_conv):
    model = build_model("cifar_alexnet_small", num_conv=num_conv).eval()
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == num_conv
    assert [c.out_channels for c in convs] == [32, 96, 192, 128][: num_conv - 1] + [128]
    assert count(model, nn.MaxPool2d) == 3
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def test_num_conv_on_the_paper_net_matches_the_upstream_variants():
    for num_conv in (3, 4):
        assert resolve_config("upstream_5conv", num_conv=num_conv) == PRESETS[f"upstream_{num_conv}conv"]


@pytest.mark.parametrize("fc_layers", [2, 3, 4])
def test_fc_layers_knob(fc_layers):
    model = build_model("cifar_alexnet_small", fc_layers=fc_layers, fc_size=64).eval()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == fc_layers
    assert [lin.out_features for lin in linears] == [64] * (fc_layers - 1) + [10]
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize("p", [0.0, 0.3])
def test_dropout_knob(p):
    model = build_model("cifar_alexnet_small", dropout=p)
    dropouts = [m for m in model.modules() if isinstance(m, nn.Dropout)]
    # one before each hidden FC layer; p=0 adds none
    assert len(dropouts) == (0 if p == 0 else 2)
    assert all(d.p == p for d in dropouts)


@pytest.mark.parametrize("width", [0.5, 2.0])
def test_width_knob_scales_conv_channels(width):
    model = build_model("cifar_alexnet_small", width=width)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    assert [c.out_channels for c in convs] == [round(c * width) for c in (32, 96, 192, 128, 128)]
    assert model.classifier[2].in_features == round(128 * width) * 16


def test_input_size_knob_changes_the_classifier_input():
    model = build_model("cifar_alexnet_small", input_size=64).eval()
    assert model.classifier[2].in_features == 128 * 8 * 8
    with torch.no_grad():
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)


@pytest.mark.parametrize(
    "preset, overrides, message",
    [
        ("nope", {}, "unknown model preset 'nope'.*cifar_alexnet"),
        ("cifar_alexnet", {"norm": "group"}, "norm='group'.*none, lrn, batch"),
        ("cifar_alexnet", {"activation": "tanh"}, "activation='tanh'.*relu, leaky_relu, gelu"),
        ("cifar_alexnet", {"num_conv": 2}, "num_conv=2"),
        ("cifar_alexnet", {"num_conv": 6}, "num_conv=6"),
        ("upstream_3conv", {"num_conv": 4}, "num_conv=4"),
        ("cifar_alexnet", {"conv_channels": (8, 8)}, "conv_channels=.*3..5"),
        ("cifar_alexnet", {"conv_channels": (8,) * 6}, "conv_channels=.*3..5"),
        ("cifar_alexnet", {"fc_layers": 1}, "fc_layers=1.*2..4"),
        ("cifar_alexnet", {"fc_layers": 5}, "fc_layers=5.*2..4"),
        ("cifar_alexnet", {"dropout": -0.1}, "dropout=-0.1"),
        ("cifar_alexnet", {"dropout": 1.0}, "dropout=1.0"),
        ("cifar_alexnet", {"width": 0}, "width=0"),
        ("cifar_alexnet", {"width": -1.0}, "width=-1.0"),
        ("cifar_alexnet", {"fc_size": 0}, "fc_size=0"),
        ("cifar_alexnet", {"conv_kernels": (3, 3)}, "conv_kernels=.*one per conv layer"),
        ("cifar_alexnet", {"conv_strides": (0, 1, 1, 1, 1)}, "conv_strides=.*>= 1"),
        ("cifar_alexnet", {"pool_after": (0, 7)}, "pool_after=.*0..4"),
        ("cifar_alexnet", {"norm_layers": (5,)}, "norm_layers=.*0..4"),
        ("cifar_alexnet", {"conv_layers": 3}, "conv_layers.*num_conv"),
        ("alexnet_paper", {"input_size": 32}, "input_size=32 .*pooling after conv2.*minimum input_size.* is 67"),
        ("cifar_alexnet", {"input_size": 4}, "input_size=4 .*pooling after conv5.*minimum input_size.* is 8"),
    ],
)
def test_bad_inputs_raise_value_error_naming_the_knob(preset, overrides, message):
    with pytest.raises(ValueError, match=message):
        build_model(preset, **overrides)


def test_bad_config_dict_raises_value_error():
    with pytest.raises(ValueError, match="unknown model config key.*colour"):
        config_from_dict({"colour": "red"})
    with pytest.raises(ValueError, match="norm='bogus'"):
        config_from_dict({"norm": "bogus"})


@pytest.mark.parametrize(
    "preset, overrides",
    [(name, {}) for name in sorted(PRESETS)]
    + [("cifar_alexnet", {"num_conv": 4, "fc_layers": 4, "width": 0.5, "activation": "gelu", "norm": "lrn"})],
)
def test_config_round_trip_rebuilds_the_same_architecture(preset, overrides):
    # the meta device gives shapes without allocating the 58M-parameter weights
    with torch.device("meta"):
        original = build_model(preset, **overrides)
        saved = json.loads(json.dumps(model_config_dict(original)))
        rebuilt = build_model(config_from_dict(saved))
    assert rebuilt.config == original.config
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in original.state_dict().items()
    }
    assert str(rebuilt) == str(original)


def test_summary_params_add_up_and_fc_layers_dominate_the_paper_net():
    model = preset_model("alexnet_paper")
    rows = summarize(model)
    assert sum(r["params"] for r in rows) == count_parameters(model) == 58_322_314
    fc_params = sum(r["params"] for r in rows if r["type"] == "Linear")
    assert fc_params / count_parameters(model) > 0.9
    assert rows[0] == {
        "layer": "features.0",
        "type": "Conv2d",
        "output_shape": (96, 55, 55),
        "params": 96 * 11 * 11 * 3 + 96,
        # FlopCounterMode: 2 FLOPs per multiply-add, bias not counted
        "flops": 2 * 55 * 55 * 96 * (11 * 11 * 3),
    }
    assert rows[-1]["output_shape"] == (10,)
    assert model.training is False


def test_total_flops_of_the_paper_net_counts_convs_and_matmuls_only():
    expected = 2 * (
        55 * 55 * 96 * 3 * 11 * 11
        + 27 * 27 * 256 * 96 * 5 * 5
        + 13 * 13 * 384 * 256 * 3 * 3
        + 13 * 13 * 384 * 384 * 3 * 3
        + 13 * 13 * 256 * 384 * 3 * 3
        + 9216 * 4096
        + 4096 * 4096
        + 4096 * 10
    )
    assert total_flops(preset_model("alexnet_paper")) == expected


def test_summarize_restores_training_mode():
    model = build_model("cifar_alexnet_small", input_size=64).train()
    rows = summarize(model)
    assert model.training is True
    assert rows[0]["output_shape"] == (32, 64, 64)
    assert [r["layer"] for r in rows][-1] == "classifier.7"


def test_model_mode_switches_for_the_block_and_restores_even_after_an_error():
    model = build_model("cifar_alexnet_small").train()
    with model_state(model, training=False):
        assert not model.training and not any(m.training for m in model.modules())
    assert model.training and all(m.training for m in model.modules())
    model.eval()
    with pytest.raises(RuntimeError, match="inside"), model_state(model, training=True):
        assert model.training
        raise RuntimeError("inside")
    assert not model.training


def test_small_model_overfits_a_fixed_random_batch():
    torch.manual_seed(0)
    model = build_model("cifar_alexnet_small", dropout=0.0).train()
    images = torch.randn(32, 3, 32, 32)
    labels = torch.randint(0, 10, (32,))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    # stop as soon as the batch is memorised: the test checks learning, not speed
    for _ in range(60):
        logits = model(images)
        accuracy = (logits.argmax(dim=1) == labels).float().mean().item()
        if accuracy >= 0.95:
            break
        optimizer.zero_grad()
        nn.functional.cross_entropy(logits, labels).backward()
        optimizer.step()
    assert accuracy >= 0.95


def test_config_defaults_are_the_cifar_preset():
    assert ModelConfig() == PRESETS["cifar_alexnet"]
