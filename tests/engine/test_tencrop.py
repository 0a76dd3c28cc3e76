"""``cnnlab valid --tencrop``: ten crops (corners, centre, and those of the mirrored image) per image,
also when the model's resize is smaller than its input (LeNet-5: digits resized to 28, padded to 32)."""

from __future__ import annotations

from pathlib import Path

import torch

from cnnlab.data.transforms import eval_transform, tencrop_transform
from cnnlab.models import create_model


def test_ten_crops_are_the_corners_the_centre_and_their_mirror_images() -> None:
    pre = create_model("resnet18", num_classes=3).meta.preprocess
    img = torch.randint(0, 256, (3, 300, 260), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    crops = tencrop_transform(pre)(img)
    assert crops.shape == (10, 3, 224, 224) and crops.dtype == torch.uint8
    resized = eval_transform(pre).transforms[1](img)  # the same resize, before any crop
    assert torch.equal(crops[0], resized[:, :224, :224])  # top-left corner
    assert torch.equal(crops[5], crops[1].flip(-1))  # the mirrored image's top-left is the top-right mirrored


def test_an_image_resized_smaller_than_the_input_is_padded_as_for_a_single_crop() -> None:
    pre = create_model("lenet5", num_classes=10).meta.preprocess  # resize 28, input 32
    img = torch.randint(0, 256, (1, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    crops = tencrop_transform(pre)(img)
    assert crops.shape == (10, 1, 32, 32)
    single = eval_transform(pre)(img)
    assert all(torch.equal(crops[i], single) for i in range(5))  # one padded image: every corner is the whole of it
    assert all(torch.equal(crops[i], single.flip(-1)) for i in range(5, 10))


def test_valid_tencrop_scores_a_run(cli, tiny_run: Path, tmp_path: Path) -> None:
    v = cli("valid", "-c", tiny_run, "--tencrop", "--no-progress", "--workers", "0", "--json", tmp_path / "v.json")
    assert v.code == 0, v.err
    assert "top-1" in v.out and (tmp_path / "v.json").is_file()
