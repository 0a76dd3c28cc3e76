"""``cnnlab data shapes OUT``: a generated detection set (shapes with exact boxes on real photos)."""

from __future__ import annotations

import argparse

NAME = "shapes"
HELP = "generate a detection set with YOLO labels: disks, squares and triangles pasted on packaged photos"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="folder to create (train/, valid/, train.txt, valid.txt, shapes.names, shapes.data)")
    p.add_argument("--train", type=int, default=400, help="training images (default: 400)")
    p.add_argument("--valid", type=int, default=100, help="held-out images (default: 100)")
    p.add_argument("--size", type=int, default=160, help="image side in pixels (default: 160)")
    p.add_argument("--seed", type=int, default=0, help="seed of the images and boxes (default: 0)")
    p.add_argument("--force", action="store_true", help="write into a folder that is not empty")


def run(args: argparse.Namespace) -> int:
    from cnnlab.data.shapes import ShapesSpec, make_shapes

    spec = ShapesSpec(train=args.train, valid=args.valid, size=args.size, seed=args.seed)
    data = make_shapes(args.out, spec, force=args.force)
    print(f"{data}: {args.train} training and {args.valid} held-out images of {args.size}x{args.size}, 3 classes")
    return 0
