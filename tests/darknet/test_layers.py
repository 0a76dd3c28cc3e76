"""Layer handlers and cfg parsing, on small cfgs written here (no reference needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cnnlab.darknet import DarknetNet, load_darknet
from cnnlab.darknet.activations import ACTIVATIONS
from cnnlab.darknet.cfg import parse_cfg, write_cfg
from cnnlab.darknet.layers import LAYERS
from cnnlab.errors import CnnlabError

NET = "[net]\nwidth={w}\nheight={h}\nchannels={c}\n"


def net(body: str, w: int = 16, h: int = 12, c: int = 3, flavor: str = "pjreddie") -> DarknetNet:
    return DarknetNet(NET.format(w=w, h=h, c=c) + body, flavor).eval()


def test_parser_strips_spaces_skips_comments_and_first_key_wins() -> None:
    text = "[net]\n width = 8 \n# comment\n; also\nheight=4\nchannels=3\nwidth=99\n\n[conv]\nfilters = 4\nsize=3x\n"
    secs = parse_cfg(text)
    assert [s.type for s in secs] == ["net", "convolutional"]
    assert secs[0].int("width", 0) == 8  # first occurrence wins
    assert secs[1].int("size", 1) == 3  # atoi
    assert parse_cfg(write_cfg(secs))[1].options == secs[1].options


def test_unknown_section_is_an_error_naming_the_line() -> None:
    with pytest.raises(CnnlabError, match=r"<cfg>:5: unknown section \[frobnicate\]"):
        net("[frobnicate]\nsize=2\n")


def test_yolo_filters_mismatch_prints_the_value_it_should_be() -> None:
    body = "[convolutional]\nfilters=100\nsize=1\nactivation=linear\n[yolo]\nmask=0,1,2\nanchors=1,2,3,4,5,6\nclasses=80\nnum=3\n"
    with pytest.raises(CnnlabError, match=r"set filters=255"):
        net(body)
    body = "[convolutional]\nfilters=51\nsize=1\n[region]\nanchors=1,2,3,4\nclasses=20\nnum=2\ncoords=4\n"
    with pytest.raises(CnnlabError, match=r"set filters=50"):
        net(body)


def test_every_registered_layer_is_buildable_from_a_cfg() -> None:
    # one small cfg using every handler, batch > 1, output shapes as darknet computes them
    body = """
[convolutional]
batch_normalize=1
filters=8
size=3
stride=1
pad=1
activation=mish
[maxpool]
size=2
stride=2
[local_avgpool]
size=2
stride=1
[convolutional]
filters=8
size=3
stride=1
pad=1
groups=2
activation=swish
[batchnorm]
[shortcut]
from=-4
activation=leaky
[scale_channels]
from=-1
[sam]
from=-2
[activation]
activation=relu
[reorg]
stride=2
[reorg]
stride=2
reverse=1
[upsample]
stride=2
[upsample]
stride=-2
[route]
layers=-1,-5
groups=2
group_id=1
[normalization]
size=3
[crop]
crop_width=6
crop_height=4
[local]
filters=4
size=3
stride=1
pad=1
activation=tanh
[dropout]
probability=0.3
[avgpool]
[connected]
output=10
activation=linear
[softmax]
groups=2
[cost]
"""
    used = {s.type for s in parse_cfg(NET + body)[1:]}
    model = net(body, flavor="alexeyab")
    assert used | {"yolo", "region"} == set(LAYERS.names())
    x = torch.rand(3, 3, 12, 16)
    with torch.no_grad():
        y = model(x)
        each = torch.cat([model(x[i : i + 1]) for i in range(3)])
    assert y.shape == (3, 10)
    torch.testing.assert_close(y, each, rtol=1e-5, atol=1e-6)  # batch > 1 = one image at a time
    torch.testing.assert_close(y.reshape(3, 2, 5).sum(-1), torch.ones(3, 2))  # softmax groups=2
    for layer in model.layers:
        assert isinstance(layer.describe("pjreddie"), str)


def test_maxpool_padding_quirks() -> None:
    m = net("[maxpool]\nsize=2\nstride=2\n", w=5, h=5, c=1)  # odd size: pads right/bottom (ceil)
    assert m.layers[0].out_shape == (1, 3, 3)
    x = torch.arange(25.0).reshape(1, 1, 5, 5) - 100  # all negative: padding must be -inf, not 0
    (y,) = m.forward_all(x)
    assert y[0, 0, 2, 2].item() == x[0, 0, 4, 4].item()
    m = net("[maxpool]\nsize=2\nstride=1\n", w=4, h=3, c=1)  # tiny-yolo: keeps the size, window [i, i+1]
    x = torch.randn(1, 1, 3, 4)
    (y,) = m.forward_all(x)
    assert y.shape == x.shape
    assert y[0, 0, 0, 0] == x[0, 0, :2, :2].max() and y[0, 0, 2, 3] == x[0, 0, 2, 3]


def test_shortcut_with_unequal_shapes_follows_darknet_loop() -> None:
    body = "[convolutional]\nfilters=6\nsize=1\nstride=1\nactivation=linear\n[maxpool]\nsize=2\nstride=2\n[convolutional]\nfilters=4\nsize=1\nactivation=linear\n[shortcut]\nfrom=-3\nalpha=0.5\nbeta=2\n"
    m = net(body, w=8, h=8, c=3)
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        outs = m.forward_all(x)
    add, prev, got = outs[0].numpy(), outs[2].numpy(), outs[3].numpy()
    # shortcut_cpu, written as darknet's loops: from is 6×8×8 (w1), prev/out 4×4×4 (w2)
    want = prev.copy()
    stride, sample = 8 // 4, max(1, 4 // 8)
    for b in range(2):
        for k in range(4):
            for j in range(4):
                for i in range(4):
                    want[b, k, j * sample, i * sample] = 0.5 * want[b, k, j * sample, i * sample] + 2 * add[b, k, j * stride, i * stride]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def _reorg_cpu(x: np.ndarray, s: int, forward: int) -> np.ndarray:
    """darknet's reorg_cpu as its loops, with the input's (c, h, w); returns the flat output."""
    c, h, w = x.shape
    flat, out = x.reshape(-1), np.zeros(x.size, x.dtype)
    oc = c // (s * s)
    for k in range(c):
        for j in range(h):
            for i in range(w):
                in_index = i + w * (j + h * k)
                c2, off = k % oc, k // oc
                out_index = (i * s + off % s) + w * s * ((j * s + off // s) + h * s * c2)
                if forward:
                    out[out_index] = flat[in_index]
                else:
                    out[in_index] = flat[out_index]
    return out


def test_reorg_follows_darknet_loops_and_is_not_pixel_unshuffle() -> None:
    m = net("[reorg]\nstride=2\n", w=4, h=6, c=8)
    r = net("[reorg]\nstride=2\nreverse=1\n", w=4, h=6, c=8)
    x = torch.randn(2, 8, 6, 4)
    (a,) = m.forward_all(x)
    (b,) = r.forward_all(x)
    assert a.shape == (2, 32, 3, 2) and b.shape == (2, 2, 12, 8)
    for n in range(2):
        # forward layer calls reorg_cpu(forward=0), the reverse layer reorg_cpu(forward=1)
        np.testing.assert_array_equal(a[n].flatten().numpy(), _reorg_cpu(x[n].numpy(), 2, 0))
        np.testing.assert_array_equal(b[n].flatten().numpy(), _reorg_cpu(x[n].numpy(), 2, 1))
    assert not torch.equal(a, torch.nn.functional.pixel_unshuffle(x, 2))


def test_batchnorm_epsilon_per_flavor() -> None:
    body = "[convolutional]\nbatch_normalize=1\nfilters=2\nsize=1\nactivation=linear\n"
    out = {}
    for flavor in ("pjreddie", "alexeyab"):
        m = net(body, w=1, h=1, c=1, flavor=flavor)
        conv, bn = m.layers[0].conv, m.layers[0].bn
        with torch.no_grad():
            conv.weight.fill_(1.0)
            bn.running_var.copy_(torch.tensor([1e-4, 1.0]))
        out[flavor] = m(torch.ones(1, 1, 1, 1))[0]
    torch.testing.assert_close(out["pjreddie"], torch.tensor([1 / (1e-2 + 1e-6), 1 / (1 + 1e-6)]))
    torch.testing.assert_close(out["alexeyab"], torch.tensor([1 / (1e-4 + 1e-5) ** 0.5, 1 / (1 + 1e-5) ** 0.5]))


def test_activations_match_darknet_formulas() -> None:
    x = torch.linspace(-5, 5, 101, dtype=torch.float64)
    torch.testing.assert_close(ACTIVATIONS.get("leaky")(x), torch.where(x > 0, x, 0.1 * x))
    torch.testing.assert_close(ACTIVATIONS.get("mish")(x), x * torch.tanh(torch.log1p(torch.exp(x))))
    torch.testing.assert_close(ACTIVATIONS.get("swish")(x), x / (1 + torch.exp(-x)))
    torch.testing.assert_close(ACTIVATIONS.get("elu")(x), torch.where(x >= 0, x, torch.exp(x) - 1))
    torch.testing.assert_close(ACTIVATIONS.get("logistic")(x), 1 / (1 + torch.exp(-x)))
    with pytest.raises(CnnlabError, match="unknown activation 'mesh'"):
        net("[convolutional]\nfilters=1\nactivation=mesh\n")


def test_module_trains_with_a_plain_pytorch_loop() -> None:
    body = "[convolutional]\nbatch_normalize=1\nfilters=4\nsize=3\npad=1\nactivation=leaky\n[avgpool]\n[connected]\noutput=3\nactivation=linear\n"
    model = net(body, w=8, h=8).train()
    names = dict(model.named_parameters())
    assert all(isinstance(p, torch.nn.Parameter) for p in names.values()) and len(names) >= 5
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x, y = torch.rand(8, 3, 8, 8), torch.randint(0, 3, (8,))
    losses = []
    for _ in range(20):
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    mean_before = model.layers[0].bn.running_mean.clone()
    model(x)
    assert not torch.equal(mean_before, model.layers[0].bn.running_mean)  # rolling stats update in training


def test_load_darknet_accepts_cfg_text() -> None:
    text = NET.format(w=4, h=4, c=3) + "[convolutional]\nfilters=2\nsize=1\n"
    model = load_darknet(text)
    assert not model.training and model.cfg_text == text
    assert model(torch.rand(1, 3, 4, 4)).shape == (1, 32)


def test_alexeyab_shortcut_multi_from_weights_and_unequal_sizes(tmp_path) -> None:
    body = """
[convolutional]
filters=4
size=1
activation=linear
[convolutional]
filters=4
size=1
activation=linear
[maxpool]
size=2
stride=2
[convolutional]
filters=4
size=1
activation=linear
[shortcut]
from=-1,-3
weights_type=per_channel
weights_normalization=relu
activation=linear
"""
    m = net(body, w=4, h=4, c=2, flavor="alexeyab")
    with torch.no_grad():
        m.layers[4].weight.copy_(torch.rand(3, 4) + 0.1)
    x = torch.randn(2, 2, 4, 4)
    with torch.no_grad():
        outs = m.forward_all(x)
    prev, same, big = outs[3].numpy(), outs[3].numpy(), outs[1].numpy()
    w = m.layers[4].weight.detach().numpy()
    w = np.maximum(w, 0) / (1e-4 + np.maximum(w, 0).sum(0))  # (inputs, C)
    want = prev * w[0][None, :, None, None] + same * w[1][None, :, None, None]
    # the 4×4 'from' is added by flat index up to the smaller (4×2×2) size, weighted by the out channel
    k = want[0].size
    flat = want.reshape(2, -1)
    flat += big.reshape(2, -1)[:, :k] * np.repeat(w[2], 4)[None, :]
    np.testing.assert_allclose(outs[4].numpy(), flat.reshape(want.shape), rtol=1e-5, atol=1e-6)
    # its weights are part of the .weights file: round trip
    m.save_weights(tmp_path / "s.weights")
    back = DarknetNet(m.cfg_text, "alexeyab")
    back.load_weights(tmp_path / "s.weights")
    torch.testing.assert_close(back.layers[4].weight, m.layers[4].weight, rtol=0, atol=0)
    with pytest.raises(CnnlabError, match="AlexeyAB-only"):
        net(body, w=4, h=4, c=2, flavor="pjreddie")


def test_route_groups_take_one_channel_slice_of_each_input() -> None:
    body = "[convolutional]\nfilters=6\nsize=1\nactivation=linear\n[convolutional]\nfilters=4\nsize=1\nactivation=linear\n[route]\nlayers=-2,-1\ngroups=2\ngroup_id=1\n"
    m = net(body, w=3, h=2, c=2, flavor="alexeyab")
    assert m.layers[2].out_shape == (5, 2, 3)
    with torch.no_grad():
        a, b, r = m.forward_all(torch.randn(2, 2, 2, 3))
    torch.testing.assert_close(r, torch.cat([a[:, 3:], b[:, 2:]], 1), rtol=0, atol=0)


def test_pjreddie_1x1_stride2_quirk_and_alexeyab_fix() -> None:
    body = "[convolutional]\nfilters=3\nsize=1\nstride=2\nactivation=linear\n"
    pj, ab = net(body, w=4, h=4, c=2), net(body, w=4, h=4, c=2, flavor="alexeyab")
    ab.load_state_dict(pj.state_dict())
    x = torch.randn(1, 2, 4, 4)
    w = pj.layers[0].conv.weight.detach().reshape(3, 2)
    b = pj.layers[0].conv.bias.detach()
    with torch.no_grad():
        (y_pj,), (y_ab,) = pj.forward_all(x), ab.forward_all(x)
    # gemm(m=3, n=out_h·out_w=4, k=2) with B = the raw input buffer, ldb = n
    flat = x.reshape(-1)[: 2 * 4].reshape(2, 4)
    torch.testing.assert_close(y_pj.reshape(3, 4), w @ flat + b[:, None])
    torch.testing.assert_close(y_ab[0], torch.einsum("fc,chw->fhw", w, x[0, :, ::2, ::2]) + b[:, None, None])


def test_forward_logits_stops_before_softmax_and_cost() -> None:
    body = "[convolutional]\nfilters=5\nsize=1\nactivation=linear\n[avgpool]\n[softmax]\ngroups=1\n[cost]\n"
    m = net(body, w=4, h=4)
    x = torch.randn(3, 3, 4, 4)
    with torch.no_grad():
        logits, probs = m.forward_logits(x), m(x)
    assert logits.shape == (3, 5)
    torch.testing.assert_close(torch.softmax(logits, 1), probs)
    assert not torch.allclose(logits, probs)


def test_initial_weights_are_darknets_not_torchs() -> None:
    """make_convolutional_layer / make_connected_layer / make_local_layer: weights
    scale·rand_uniform(-1, 1) with scale = sqrt(2/fan_in) (pjreddie's convolutions: scale·rand_normal()),
    biases 0, BN scales 1 — torch's defaults are uniform ±1/sqrt(fan_in) with random biases, √2 smaller,
    which is a different effective learning rate for every layer under batch norm."""
    body = (
        "[convolutional]\nbatch_normalize=1\nfilters=64\nsize=3\npad=1\nactivation=leaky\n"  # fan_in 27
        "[convolutional]\nfilters=96\nsize=1\ngroups=4\nactivation=linear\n"  # fan_in 16, biases
        "[local]\nfilters=4\nsize=3\nstride=2\nactivation=linear\n"  # fan_in 96·9
        "[connected]\noutput=300\nactivation=linear\n"
    )
    torch.manual_seed(0)
    for flavor in ("alexeyab", "pjreddie"):
        m = net(body, w=16, h=16, flavor=flavor)
        conv0, conv1, local, fc = m.layers
        fc_in = local.out_shape[0] * local.out_shape[1] * local.out_shape[2]
        for w, fan_in, normal in [
            (conv0.conv.weight, 27, flavor == "pjreddie"),
            (conv1.conv.weight, 16, flavor == "pjreddie"),
            (local.weight, 96 * 9, False),
            (fc.fc.weight, fc_in, False),
        ]:
            scale = (2 / fan_in) ** 0.5
            std = float(w.std())
            if normal:
                assert std == pytest.approx(scale, rel=0.08)
            else:
                assert float(w.abs().max()) <= scale
                assert float(w.abs().max()) > 0.97 * scale
                assert std == pytest.approx(scale / 3**0.5, rel=0.08)
        assert torch.all(conv0.bn.weight == 1) and torch.all(conv0.bn.bias == 0)
        assert torch.all(conv1.conv.bias == 0) and torch.all(local.bias == 0) and torch.all(fc.fc.bias == 0)
