"""Small darknet cfgs written by the export tests: an mnist classifier and a two-head YOLO detector."""

from __future__ import annotations

CONV = "[convolutional]\nbatch_normalize=1\nfilters={f}\nsize=3\nstride={s}\npad=1\nactivation=leaky\n\n"

MNIST_CLASSIFIER = (
    "[net]\nwidth=28\nheight=28\nchannels=1\n\n"
    + CONV.format(f=8, s=1)
    + "[maxpool]\nsize=2\nstride=2\n\n"
    + CONV.format(f=16, s=1)
    + "[maxpool]\nsize=2\nstride=2\n\n"
    + "[convolutional]\nfilters=10\nsize=1\nstride=1\npad=1\nactivation=linear\n\n"
    + "[avgpool]\n\n[softmax]\ngroups=1\n"
)

_ANCHORS = "anchors=10,14, 23,27, 37,58, 81,82, 135,169, 344,319\n"
_HEAD = "[convolutional]\nfilters=24\nsize=1\nstride=1\npad=1\nactivation=linear\n\n[yolo]\nmask={mask}\n" + _ANCHORS + "classes=3\nnum=6\nscale_x_y=1.05\n\n"

# 64×64 RGB, heads at 8×8 and 16×16 (route + upsample), 3 classes, AlexeyAB's scale_x_y
YOLO = (
    "[net]\nwidth=64\nheight=64\nchannels=3\n\n"
    + CONV.format(f=8, s=2)
    + CONV.format(f=16, s=2)
    + CONV.format(f=16, s=2)
    + _HEAD.format(mask="3,4,5")
    + "[route]\nlayers=-3\n\n[upsample]\nstride=2\n\n[route]\nlayers=-1,-6\n\n"
    + _HEAD.format(mask="0,1,2")
)
