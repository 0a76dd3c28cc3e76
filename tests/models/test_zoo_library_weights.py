"""cnnlab models load torchvision's and timm's ``state_dict``s strictly and then compute the same
outputs. The library models are built with random weights (nothing is downloaded)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import timm
import torch
import torchvision.models as tvm
from torch import nn

from cnnlab.models import create_model

TORCHVISION: dict[str, Callable[[], nn.Module]] = {
    "alexnet_owt": tvm.alexnet,
    **{n: getattr(tvm, n) for d in (11, 13, 16, 19) for n in (f"vgg{d}", f"vgg{d}_bn")},
    # init_weights=False: PyTorch's default init is much faster than their truncated normal, and
    # any random weights do. transform_input=False: cnnlab feeds inputs already scaled to [-1, 1].
    "googlenet": lambda: tvm.googlenet(aux_logits=True, init_weights=False, transform_input=False),
    "inception_v3": lambda: tvm.inception_v3(aux_logits=True, init_weights=False, transform_input=False),
    **{f"resnet{d}": getattr(tvm, f"resnet{d}") for d in (18, 34, 50, 101, 152)},
}
TIMM = ("inception_v4", "inception_resnet_v2")
LIBRARY: dict[str, Callable[[], nn.Module]] = {
    **TORCHVISION,
    **{name: (lambda name=name: timm.create_model(name, pretrained=False)) for name in TIMM},
}


def _randomise_bn_stats(model: nn.Module) -> None:
    # Fresh BN layers have mean 0 / var 1, which would hide a running-stat key loaded into the
    # wrong layer; give them distinct values first.
    g = torch.Generator().manual_seed(1)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_library_state_dict_loads_strictly_and_outputs_match(name: str) -> None:
    torch.manual_seed(0)
    ref = LIBRARY[name]().eval()
    _randomise_bn_stats(ref)
    with torch.device("meta"):  # no point initialising weights that are about to be replaced
        ours = create_model(name)
    ours.load_state_dict(ref.state_dict(), strict=True, assign=True)
    ours.eval()
    x = torch.randn(1, *ours.meta.preprocess.input_size)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert expected.std() > 0  # a constant output would compare equal for the wrong reasons


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_documented_count_is_torchvisions_published_figure(name: str, documented_counts: dict[str, int]) -> None:
    tv_name = "alexnet" if name == "alexnet_owt" else name
    weights = tvm.get_model_weights(tv_name).DEFAULT
    figure = weights.meta["num_params"]
    if name == "googlenet":  # torchvision's figure drops the two auxiliary heads
        ours = create_model(name, aux_logits=False)
        assert sum(p.numel() for p in ours.parameters()) == figure
    else:
        assert documented_counts[name] == figure


# timm lays out two zoo families differently: VGG's fc6/fc7 are convolutions (a ConvMlp ``pre_logits``),
# and its inception_v3 has no auxiliary head. cnnlab's loader maps the first and leaves the second's
# aux head fresh (it only trains); both then give timm's outputs.
@pytest.mark.parametrize("name", ["vgg11", "inception_v3"])
def test_timm_layouts_load_through_the_checkpoint_loader_with_equal_outputs(name: str) -> None:
    from cnnlab.engine.checkpoint import load_weights

    torch.manual_seed(0)
    ref = timm.create_model(name, pretrained=False).eval()
    _randomise_bn_stats(ref)
    ours = create_model(name)
    notes = load_weights(ours, ref.state_dict(), f"timm {name}")
    assert notes == ([] if name == "vgg11" else ["timm inception_v3 has no auxiliary classifier: AuxLogits start(s) from fresh weights (used in training only, no output changes)"])
    ours.eval()
    x = torch.randn(2, *ours.meta.preprocess.input_size)
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)
    assert expected.std() > 0
