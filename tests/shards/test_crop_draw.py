"""The compiled crop draw is the plain-Python rule, bit for bit, and draws what RandomResizedCrop draws."""

from __future__ import annotations

import math
import random

import numpy as np
import torch
from torchvision.transforms import RandomResizedCrop

from cnnlab.data.loader import sample_seed
from cnnlab.data.shards.crop_draw import draw_crop

from .reference_crop import SampleRandom, rrc_box

SIZES = [(342, 256), (256, 342), (256, 256), (1200, 800), (5, 300), (300, 5), (1, 1), (40, 7)]
SCALES = [(0.08, 1.0), (0.5, 1.0), (1.0, 1.0), (0.01, 0.02)]
RATIOS = [(3 / 4, 4 / 3), (1.0, 1.0), (0.5, 2.0)]


def test_compiled_draw_equals_the_python_rule_on_many_keys():
    pick = random.Random(0)
    for _ in range(20_000):
        seed = sample_seed(pick.randrange(1000), pick.randrange(100), pick.randrange(10**7))
        (width, height), scale, ratio = pick.choice(SIZES), pick.choice(SCALES), pick.choice(RATIOS)
        hflip = pick.choice([0.0, 0.5, 1.0])
        rng = SampleRandom(seed)
        box = rrc_box(width, height, rng, scale, ratio)
        assert draw_crop(seed, width, height, scale, ratio, hflip) == (box, rng.random() < hflip), (seed, width, height, scale, ratio)


def test_draws_cover_the_areas_aspects_and_places_of_random_resized_crop():
    draws = [draw_crop(sample_seed(0, 0, i), 342, 256, (0.08, 1.0), (3 / 4, 4 / 3), 0.5) for i in range(4000)]
    boxes = np.array([box for box, _ in draws], dtype=float)
    area = boxes[:, 2] * boxes[:, 3] / (342 * 256)
    log_aspect = np.log(boxes[:, 2] / boxes[:, 3])
    torch.manual_seed(0)
    image = torch.empty(3, 256, 342)
    theirs = np.array([RandomResizedCrop.get_params(image, [0.08, 1.0], [3 / 4, 4 / 3]) for _ in range(4000)], dtype=float)  # (top, left, h, w)
    their_area = theirs[:, 2] * theirs[:, 3] / (342 * 256)
    assert 0.07 < area.min() < 0.1 and area.max() <= 1.0
    assert abs(area.mean() - their_area.mean()) < 0.02 and abs(np.median(area) - np.median(their_area)) < 0.03
    assert abs(log_aspect.mean() - np.log(theirs[:, 3] / theirs[:, 2]).mean()) < 0.02
    assert log_aspect.min() > math.log(3 / 4) - 0.05 and log_aspect.max() < math.log(4 / 3) + 0.05
    assert (boxes[:, 0] + boxes[:, 2] <= 342).all() and (boxes[:, 1] + boxes[:, 3] <= 256).all() and (boxes[:, :2] >= 0).all()
    assert 0.47 < np.mean([flip for _, flip in draws]) < 0.53
    # A key's draw does not depend on anything else: repeat it out of order.
    assert draw_crop(sample_seed(0, 0, 17), 342, 256, (0.08, 1.0), (3 / 4, 4 / 3), 0.5) == draws[17]
