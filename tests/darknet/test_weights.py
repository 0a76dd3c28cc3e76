""".weights: byte-identical save → load → save for every reference net, partial, header variants, size errors."""

from __future__ import annotations

import io
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.darknet import load_darknet, rebuild_darknet
from cnnlab.darknet.programs import partial
from cnnlab.darknet.weights import WeightsHeader, save_weights
from cnnlab.errors import CnnlabError

from .refdata import REF

CFGS = sorted(p.stem for p in (REF / "cfg").glob("*.cfg"))
FLAVOR = {"yolov4-tiny": "alexeyab"}  # route groups exist only in AlexeyAB


@pytest.mark.parametrize("net", CFGS)
def test_save_load_save_is_byte_identical(net: str, weights_for, tmp_path: Path) -> None:
    src = weights_for(net)
    model = load_darknet(REF / "cfg" / f"{net}.cfg", src, FLAVOR.get(net, "pjreddie"))
    once = tmp_path / "once.weights"
    model.save_weights(once)
    assert once.read_bytes() == src.read_bytes()
    again = tmp_path / "again.weights"
    load_darknet(REF / "cfg" / f"{net}.cfg", once, FLAVOR.get(net, "pjreddie")).save_weights(again)
    assert again.read_bytes() == src.read_bytes()


def test_checkpoint_of_cfg_text_and_state_dict_round_trips(weights_for, tmp_path: Path) -> None:
    src = weights_for("tiny")  # the 4-byte `seen` header variant survives via extra state
    model = load_darknet(REF / "cfg" / "tiny.cfg", src)
    ckpt = {"cfg_text": model.cfg_text, "flavor": model.flavor, "state_dict": model.state_dict()}
    buf = io.BytesIO()
    torch.save(ckpt, buf)
    buf.seek(0)
    back = torch.load(buf, weights_only=False)
    rebuilt = rebuild_darknet(back["cfg_text"], back["flavor"], back["state_dict"])
    rebuilt.save_weights(tmp_path / "r.weights")
    assert (tmp_path / "r.weights").read_bytes() == src.read_bytes()


def test_partial_keeps_first_layers_and_resets_seen(weights_for, tmp_path: Path) -> None:
    cfg = REF / "cfg" / "oracle-mini-pj.cfg"
    src = weights_for("oracle-mini-pj")
    n = 10
    out = tmp_path / "p.weights"
    partial(cfg=str(cfg), weights=str(src), outfile=str(out), n=n, err=io.StringIO())
    data = out.read_bytes()
    assert struct.unpack_from("<iiiQ", data) == (0, 2, 0, 0)  # darknet layout, seen reset
    full = load_darknet(cfg, src)
    want_floats = sum(t.numel() for layer in list(full.layers)[:n] for t in layer.blocks())
    assert len(data) == 20 + 4 * want_floats
    assert data[20:] == src.read_bytes()[20 : 20 + 4 * want_floats]
    # loading the prefix into the full cfg is refused unless asked for, naming the layer that does not fit
    with pytest.raises(CnnlabError, match=r"layer 12 \[local\].*needs 342184 floats"):
        load_darknet(cfg, out)
    part = load_darknet(cfg, out, allow_partial=True)
    assert part.loaded_layers == 12  # layers 10, 11 own no weights
    x = torch.rand(2, 3, 64, 80)
    with torch.no_grad():
        a, b = full.forward_all(x, upto=n), part.forward_all(x, upto=n)
    for i in range(n):
        torch.testing.assert_close(a[i], b[i], rtol=0, atol=0)


def test_transposed_connected_flag(weights_for, tmp_path: Path) -> None:
    cfg = REF / "cfg" / "oracle-mini-pj.cfg"
    model = load_darknet(cfg, weights_for("oracle-mini-pj"))
    t = tmp_path / "t.weights"
    header = WeightsHeader(major=0, minor=1001, revision=0, seen=7, seen_bytes=4)  # pjreddie: 4-byte seen when minor >= 1000
    save_weights(model, t, header=header)
    back = load_darknet(cfg, t)
    assert back.header.transpose and back.header.seen == 7
    fc = back.layers[16].fc.weight
    torch.testing.assert_close(fc, model.layers[16].fc.weight, rtol=0, atol=0)
    # in the file, layer 16's weights follow its 40 biases, stored [in][out]
    floats = np.frombuffer(t.read_bytes()[16:], "<f4")
    end = len(floats) - 0
    stored = floats[end - 64 * 40 :].reshape(64, 40)
    np.testing.assert_array_equal(stored, fc.detach().numpy().T)
    x = torch.rand(1, 3, 64, 80)
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x), rtol=0, atol=0)


def test_alexeyab_seen_width_differs_for_large_minor(tmp_path: Path) -> None:
    h = WeightsHeader.parse(struct.pack("<iiiQ", 0, 1001, 0, 5), "alexeyab", "x")
    assert (h.seen_bytes, h.seen, h.transpose) == (8, 5, True)
    h = WeightsHeader.parse(struct.pack("<iiiI", 0, 1, 0, 5), "pjreddie", "x")
    assert (h.seen_bytes, h.seen, h.transpose) == (4, 5, False)


def test_size_mismatch_names_first_layer_and_both_sizes(weights_for, tmp_path: Path) -> None:
    src = weights_for("darknet").read_bytes()
    short = tmp_path / "short.weights"
    short.write_bytes(src[: 20 + 4 * 500])  # ends inside layer 2 (layer 0 has 16·4 + 432 = 496 floats)
    with pytest.raises(CnnlabError) as e:
        load_darknet(REF / "cfg" / "darknet.cfg", short)
    msg = str(e.value)
    assert "layer 2 [convolutional]" in msg and "7323480 floats" in msg and "has 500" in msg and "--allow-partial" in msg
    long = tmp_path / "long.weights"
    long.write_bytes(src + b"\0" * 8)
    with pytest.raises(CnnlabError, match="too long"):
        load_darknet(REF / "cfg" / "darknet.cfg", long)
    ragged = tmp_path / "ragged.weights"
    ragged.write_bytes(src[:-1])
    with pytest.raises(CnnlabError, match="corrupt"):
        load_darknet(REF / "cfg" / "darknet.cfg", ragged)


def test_checkpoint_payload_rebuilds_the_same_network(weights_for) -> None:
    from cnnlab.darknet import checkpoint_payload, from_checkpoint_payload

    model = load_darknet(REF / "cfg" / "oracle-mini-pj.cfg", weights_for("oracle-mini-pj"))
    payload = checkpoint_payload(model)
    assert payload["classes"] == 40 and payload["input_size"] == [3, 64, 80] and not payload["detector"]
    back = from_checkpoint_payload(payload)
    x = torch.rand(2, 3, 64, 80)
    with torch.no_grad():
        torch.testing.assert_close(back(x), model(x), rtol=0, atol=0)
    with pytest.raises(CnnlabError, match="not a darknet checkpoint"):
        from_checkpoint_payload({"format": "other"})


def test_partial_refuses_to_overwrite_without_force(weights_for, tmp_path: Path, capsys) -> None:
    from cnnlab.cli import main

    cfg, src = REF / "cfg" / "oracle-mini-pj.cfg", weights_for("oracle-mini-pj")
    out = tmp_path / "mine.weights"
    out.write_bytes(b"the user's file")
    code = main(["darknet", "partial", str(cfg), str(src), str(out), "10"])
    err = capsys.readouterr().err
    assert code == 2 and "already exists" in err and "--force" in err and len(err.strip().splitlines()) == 1
    assert out.read_bytes() == b"the user's file"
    assert main(["darknet", "partial", str(cfg), str(src), str(out), "10", "--force"]) == 0
    assert load_darknet(cfg, out, allow_partial=True).loaded_layers == 12
