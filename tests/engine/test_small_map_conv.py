"""The matmul path for convolutions on tiny maps (cnnlab.engine.small_map_conv) computes conv2d."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.engine.small_map_conv import MAX_PIXELS, SmallMapConv2d, route_small_map_convs, unfold_conv2d
from cnnlab.models import create_model

GEOMETRIES = [
    # (in_c, out_c, kernel, stride, padding, dilation, H, W, bias)
    (8, 6, (3, 3), (1, 1), (1, 1), (1, 1), 2, 2, False),
    (5, 7, (3, 3), (2, 2), (1, 1), (1, 1), 4, 3, True),
    (4, 4, (1, 1), (1, 1), (0, 0), (1, 1), 1, 1, True),
    (3, 5, (3, 2), (1, 2), (2, 1), (2, 1), 3, 5, False),
]


@pytest.mark.parametrize("geometry", GEOMETRIES)
def test_unfold_conv2d_equals_conv2d_forward_and_backward(geometry) -> None:
    in_c, out_c, k, stride, padding, dilation, h, w, has_bias = geometry
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, in_c, h, w, generator=g, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(out_c, in_c, *k, generator=g, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(out_c, generator=g, dtype=torch.float64, requires_grad=True) if has_bias else None
    grad_out_seed = torch.Generator().manual_seed(1)

    def run(fn):
        leaves = [t for t in (x, weight, bias) if t is not None]
        for t in leaves:
            t.grad = None
        y = fn(x, weight, bias, stride, padding, dilation)
        upstream = torch.randn(y.shape, generator=grad_out_seed.manual_seed(1), dtype=y.dtype)
        y.backward(upstream)
        return y.detach().clone(), [t.grad.clone() for t in leaves]

    y_ref, grads_ref = run(lambda *a: F.conv2d(*a))
    y, grads = run(unfold_conv2d)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, grads_ref):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_routing_keeps_parameters_and_state_dict_keys() -> None:
    torch.manual_seed(0)
    model = create_model("resnet18", num_classes=10)
    keys = list(model.state_dict())
    params = [id(p) for p in model.parameters()]
    swapped = route_small_map_convs(model)
    assert swapped == sum(isinstance(m, nn.Conv2d) for m in model.modules()) > 0
    assert list(model.state_dict()) == keys
    assert [id(p) for p in model.parameters()] == params  # an optimizer built before still trains them


def _layer_output_under(conv: nn.Conv2d, x: torch.Tensor, autocast: bool, grad: bool) -> torch.Tensor:
    with torch.set_grad_enabled(grad), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        return conv(x)


def test_matmul_path_only_for_tiny_maps_under_cpu_bf16_training(monkeypatch) -> None:
    calls = []
    import cnnlab.engine.small_map_conv as smc

    real = smc.unfold_conv2d
    monkeypatch.setattr(smc, "unfold_conv2d", lambda *a: calls.append(a[0].shape) or real(*a))
    conv = SmallMapConv2d.from_conv(nn.Conv2d(4, 4, 3, padding=1))
    side = int(MAX_PIXELS**0.5)
    tiny, big = torch.randn(2, 4, side, side), torch.randn(2, 4, 8, 8)
    _layer_output_under(conv, tiny, autocast=True, grad=True)
    assert len(calls) == 1
    _layer_output_under(conv, big, autocast=True, grad=True)  # 64 pixels: oneDNN is faster
    _layer_output_under(conv, tiny, autocast=False, grad=True)  # fp32: untouched
    _layer_output_under(conv, tiny, autocast=True, grad=False)  # inference: untouched
    assert len(calls) == 1


def test_bf16_training_gradients_as_accurate_as_onednn() -> None:
    """Against a float64 reference, the routed bf16 step is no less accurate than oneDNN's bf16 step."""
    torch.manual_seed(0)
    plain = create_model("resnet18", num_classes=10).to(memory_format=torch.channels_last)
    routed = copy.deepcopy(plain)
    assert route_small_map_convs(routed) > 0
    reference = copy.deepcopy(plain).double()
    x = torch.randn(8, 3, 64, 64).contiguous(memory_format=torch.channels_last)  # layer4 maps are 2×2
    y = torch.randint(0, 10, (8,))

    def layer4_grads(model: nn.Module, bf16: bool) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(x.double() if not bf16 else x).float(), y)
        loss.backward()
        return torch.cat([p.grad.double().flatten() for p in model.layer4.parameters()])

    want = layer4_grads(reference, bf16=False)
    err_onednn = (layer4_grads(plain, bf16=True) - want).norm() / want.norm()
    err_routed = (layer4_grads(routed, bf16=True) - want).norm() / want.norm()
    assert err_routed < 1.5 * err_onednn + 1e-3, f"routed {err_routed:.3g} vs oneDNN {err_onednn:.3g}"
