"""``cnnlab darknet ...``: darknet's own commands, printing what darknet (pjreddie or AlexeyAB) prints.

    cnnlab darknet classifier predict DATA CFG WEIGHTS [IMAGE] [-t N]
    cnnlab darknet classifier valid DATA CFG WEIGHTS
    cnnlab darknet classifier train DATA CFG [WEIGHTS] [--max-batches N] [--force] [-clear] [-topk]
    cnnlab darknet detector test DATA CFG WEIGHTS [IMAGE] [-thresh T] [-out NAME] [--force]
    cnnlab darknet detector train DATA CFG [WEIGHTS] [-map] [-dont_show] [-clear] [--max-batches N] [--force]
    cnnlab darknet detector map DATA CFG WEIGHTS [-points 0|11|101] [-iou_thresh T] [-thresh T]   (AlexeyAB's)
    cnnlab darknet detector valid DATA CFG WEIGHTS [-out PREFIX] [--force]                       (AlexeyAB's)
    cnnlab darknet detector calc_anchors DATA -num_of_clusters K -width W -height H [--seed S] [--write-cfg CFG]
    cnnlab darknet partial CFG WEIGHTS OUT N [--force]
    cnnlab darknet convert CFG WEIGHTS OUT.pt [--data FILE | --names FILE] [--force]
    cnnlab darknet layers CFG                 (the layer table darknet prints)

Every command takes ``--flavor pjreddie|alexeyab`` (default pjreddie), but ``detector map | valid |
calc_anchors`` (AlexeyAB's own programs).
"""

from __future__ import annotations

import argparse

from cnnlab.commands._inference import add_engine_arguments, engine_options

NAME = "darknet"
VALID_BATCH = 8  # as cnnlab.darknet.programs.VALID_BATCH (not imported: the parser stays torch-free)
HELP = "run darknet .cfg/.weights with darknet's commands (classifier predict/valid/train, detector test/map/valid/calc_anchors, partial, convert)"


def _common(p: argparse.ArgumentParser, weights: bool = True) -> None:
    p.add_argument("--flavor", choices=["pjreddie", "alexeyab"], default="pjreddie", help="which darknet to imitate")
    if weights:
        p.add_argument("--allow-partial", action="store_true", help="load a weights file that covers only the first layers")


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="darknet_command", metavar="COMMAND", required=True)
    cls = sub.add_parser("classifier", help="classifier predict | valid | train").add_subparsers(dest="mode", metavar="MODE", required=True)
    _classifier_parsers(cls)
    det = sub.add_parser("detector", help="detector test | train | map | valid | calc_anchors").add_subparsers(dest="mode", metavar="MODE", required=True)
    _detector_test_parser(det)
    _detector_eval_parsers(det)
    _detector_train_parser(det)
    _tool_parsers(sub)


FILE_HELP = {
    "data": "darknet .data file (classes=, names= or labels=, train=, valid=, backup=)",
    "cfg": "the network's darknet .cfg file",
    "weights": "darknet .weights file",
}


def _files(p: argparse.ArgumentParser, *names: str) -> None:
    """The positional files every darknet program takes, in darknet's order."""
    for name in names:
        p.add_argument(name, help=FILE_HELP[name])


def _classifier_parsers(cls: argparse._SubParsersAction) -> None:
    """darknet's classifier predict / valid / train (cnnlab.darknet.programs, cnnlab.darknet.train)."""
    pr = cls.add_parser("predict", help="top-N classes of one image", allow_abbrev=False)
    _files(pr, "data", "cfg", "weights")
    pr.add_argument("image", nargs="?", help="image path (asked on stdin if omitted, as darknet does)")
    pr.add_argument("-t", type=int, default=0, dest="top", help="how many classes to print (default: the .data top=)")
    _common(pr)
    add_engine_arguments(pr)
    pr.set_defaults(_dn=_predict)
    va = cls.add_parser("valid", help="top-1/top-k accuracy on the .data valid= list", allow_abbrev=False)
    _files(va, "data", "cfg", "weights")
    _common(va)
    add_engine_arguments(va, batch=VALID_BATCH)
    va.set_defaults(_dn=_valid)
    tr = cls.add_parser("train", help="train a classifier cfg as darknet does, writing .weights backups", allow_abbrev=False)
    _files(tr, "data", "cfg")
    tr.add_argument("weights", nargs="?", help="start (or resume, from a backup's seen) from these weights")
    tr.add_argument("--max-batches", type=int, default=None, help="override [net] max_batches=")
    tr.add_argument("--force", action="store_true", help="overwrite existing weights files in backup=")
    tr.add_argument("-clear", "--clear", action="store_true", dest="clear", help="restart the batch counter at 0 (seen=0), as darknet's -clear")
    tr.add_argument("--seed", type=int, default=0, help="image order and crops (default 0)")
    tr.add_argument("-topk", "--topk", action="store_true", dest="topk", help="AlexeyAB: top-k accuracy on valid= every 2 epochs and at the end")
    _common(tr)
    tr.set_defaults(_dn=_train)


def _detector_test_parser(det: argparse._SubParsersAction) -> None:
    te = det.add_parser("test", help="detect objects in one image, write NAME.png with the boxes", allow_abbrev=False)
    _files(te, "data", "cfg", "weights")
    te.add_argument("image", nargs="?", help="image path (asked on stdin if omitted, as darknet does)")
    te.add_argument("-thresh", type=float, default=None, help="probability threshold (pjreddie .5, AlexeyAB .25)")
    te.add_argument("-hier", type=float, default=0.5, help="accepted for darknet's command lines: the word-tree threshold, which changes nothing here (tree= cfgs are refused)")
    te.add_argument("-nms", type=float, default=0.45, help=argparse.SUPPRESS)
    te.add_argument("-out", default="predictions", help="output image name without extension (default predictions)")
    te.add_argument("--letter-box", "-letter_box", action="store_true", dest="letter_box", help="AlexeyAB: letterbox instead of stretch")
    te.add_argument("-ext_output", action="store_true", help="AlexeyAB: print box coordinates")
    te.add_argument("-dont_show", action="store_true", help=argparse.SUPPRESS)
    te.add_argument("--force", action="store_true", help="overwrite NAME.png if it exists")
    _common(te)
    add_engine_arguments(te)
    te.set_defaults(_dn=_test)


def _detector_train_parser(det: argparse._SubParsersAction) -> None:
    dt = det.add_parser("train", help="train a detector cfg as darknet does, writing .weights backups", allow_abbrev=False)
    _files(dt, "data", "cfg")
    dt.add_argument("weights", nargs="?", help="start from these weights (a backup resumes from its seen; a .conv.N file loads its layers)")
    dt.add_argument("-map", "--map", action="store_true", dest="calc_map", help="AlexeyAB: mAP on valid= every 4 epochs and at the end; writes _best.weights")
    dt.add_argument("-dont_show", action="store_true", help="accepted for AlexeyAB's command lines (cnnlab never opens a window)")
    dt.add_argument("-clear", "--clear", action="store_true", dest="clear", help="restart the iteration counter at 0 (seen=0)")
    dt.add_argument("-iou_thresh", type=float, default=0.5, help="IoU threshold of -map (default .5)")
    dt.add_argument("-thresh", type=float, default=0.25, help="confidence threshold of -map's precision/recall (default .25)")
    dt.add_argument("--max-batches", type=int, default=None, help="override [net] max_batches=")
    dt.add_argument("--force", action="store_true", help="overwrite existing weights files in backup=")
    dt.add_argument("--seed", type=int, default=0, help="image order, augmentation and sizes (default 0)")
    _common(dt)
    dt.set_defaults(_dn=_detector_train)


def _tool_parsers(sub: argparse._SubParsersAction) -> None:
    """partial, convert, layers: working on cfg and weights files."""
    pa = sub.add_parser("partial", help="keep the first N layers' weights (seen reset)", allow_abbrev=False)
    _files(pa, "cfg", "weights")
    pa.add_argument("out", help="the .weights file to write")
    pa.add_argument("n", type=int, help="how many layers to keep, counted from the first")
    pa.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    _common(pa, weights=False)
    pa.set_defaults(_dn=_partial)
    co = sub.add_parser("convert", help="cfg + weights -> a cnnlab checkpoint for cnnlab train/valid/predict", allow_abbrev=False)
    _files(co, "cfg", "weights")
    co.add_argument("out", metavar="OUT.pt", help="the cnnlab checkpoint to write")
    names = co.add_mutually_exclusive_group()
    names.add_argument("--data", help="darknet .data file whose names= (or labels=) names the classes")
    names.add_argument("--names", help="class names file, one per line")
    co.add_argument("--force", action="store_true", help="overwrite OUT.pt if it exists")
    _common(co)
    co.set_defaults(_dn=_convert)
    la = sub.add_parser("layers", help="print the layer table darknet prints for a cfg")
    _files(la, "cfg")
    _common(la, weights=False)
    la.set_defaults(_dn=_layers)


def _detector_eval_parsers(det: argparse._SubParsersAction) -> None:
    """AlexeyAB's detector map / valid / calc_anchors (cnnlab.darknet.detector_programs)."""
    ma = det.add_parser("map", help="mAP on the .data valid= images, printed as AlexeyAB darknet prints it", allow_abbrev=False)
    _files(ma, "data", "cfg", "weights")
    ma.add_argument("-points", type=int, default=0, help="0: area under the curve (default), 11: VOC2007, 101: COCO")
    ma.add_argument("-iou_thresh", type=float, default=0.5, help="a detection matches a truth above this IoU (default .5)")
    ma.add_argument("-thresh", type=float, default=0.25, help="confidence for TP/FP/FN, precision, recall, average IoU (default .25)")
    ma.add_argument("-letter_box", action="store_true", help="accepted as darknet does, and ignored as darknet's map does: [net] letter_box=1 decides")
    ma.add_argument("-dont_show", action="store_true", help=argparse.SUPPRESS)
    ma.add_argument("--allow-partial", action="store_true", help="load a weights file that covers only the first layers")
    ma.set_defaults(_dn=_map)
    va = det.add_parser("valid", help="write detections of the valid= images as darknet does (results/<PREFIX><class>.txt or .json)", allow_abbrev=False)
    _files(va, "data", "cfg", "weights")
    va.add_argument("-out", default=None, help="file name prefix (default comp4_det_test_, or coco_results for eval=coco)")
    va.add_argument("--force", action="store_true", help="overwrite existing result files")
    va.add_argument("--allow-partial", action="store_true", help="load a weights file that covers only the first layers")
    va.set_defaults(_dn=_det_valid)
    ca = det.add_parser("calc_anchors", help="anchors by k-means (1 - IoU) over the train= labels, seeded", allow_abbrev=False)
    _files(ca, "data")
    ca.add_argument("-num_of_clusters", type=int, default=5, help="how many anchors (default 5)")
    ca.add_argument("-width", type=int, default=-1, help="network input width")
    ca.add_argument("-height", type=int, default=-1, help="network input height")
    ca.add_argument("-show", action="store_true", help="also draw the boxes and anchors into anchors.png")
    ca.add_argument("--seed", type=int, default=0, help="which boxes start the k-means (darknet uses the time; default 0)")
    ca.add_argument("--write-cfg", metavar="CFG", default=None, help="write a copy of CFG with these anchors in each [yolo]/[region]")
    ca.add_argument("--cfg-out", metavar="OUT", default=None, help="where --write-cfg writes (default CFG's name + -anchors.cfg)")
    ca.add_argument("--out-dir", default=".", help="folder for anchors.txt and counters_per_class.txt (darknet: the working folder)")
    ca.add_argument("--force", action="store_true", help="overwrite anchors.txt, counters_per_class.txt and the cfg copy")
    ca.set_defaults(_dn=_calc_anchors)


def _map(a: argparse.Namespace) -> int:
    from cnnlab.darknet.detector_programs import detector_map

    detector_map(data=a.data, cfg=a.cfg, weights=a.weights, points=a.points, iou_thresh=a.iou_thresh, thresh=a.thresh,
                 letter_box=a.letter_box, allow_partial=a.allow_partial)  # fmt: skip
    return 0


def _det_valid(a: argparse.Namespace) -> int:
    from cnnlab.darknet.detector_programs import detector_valid

    return detector_valid(data=a.data, cfg=a.cfg, weights=a.weights, outfile=a.out, allow_partial=a.allow_partial, force=a.force)


def _calc_anchors(a: argparse.Namespace) -> int:
    from cnnlab.darknet.detector_programs import calc_anchors

    return calc_anchors(data=a.data, num_of_clusters=a.num_of_clusters, width=a.width, height=a.height, show=a.show, seed=a.seed,
                        write_cfg=a.write_cfg, cfg_out=a.cfg_out, out_dir=a.out_dir, force=a.force)  # fmt: skip


def _predict(a: argparse.Namespace) -> int:
    from cnnlab.darknet.programs import classifier_predict

    return classifier_predict(
        data=a.data, cfg=a.cfg, weights=a.weights, image=a.image, top=a.top, flavor=a.flavor, allow_partial=a.allow_partial,
        options=engine_options(a),
    )


def _valid(a: argparse.Namespace) -> int:
    from cnnlab.darknet.programs import classifier_valid

    return classifier_valid(data=a.data, cfg=a.cfg, weights=a.weights, flavor=a.flavor, allow_partial=a.allow_partial,
                            options=engine_options(a, VALID_BATCH))  # fmt: skip


def _train(a: argparse.Namespace) -> int:
    from cnnlab.darknet.train import train_classifier

    train_classifier(a.data, a.cfg, a.weights, a.flavor, a.max_batches, a.force, a.clear, a.allow_partial, a.seed, a.topk)
    return 0


def _detector_train(a: argparse.Namespace) -> int:
    from cnnlab.darknet.detector_train import train_detector

    train_detector(
        a.data, a.cfg, a.weights, flavor=a.flavor, max_batches=a.max_batches, force=a.force, clear=a.clear,
        allow_partial=True, seed=a.seed, calc_map=a.calc_map, iou_thresh=a.iou_thresh, thresh=a.thresh,
    )
    return 0


def _test(a: argparse.Namespace) -> int:
    from cnnlab.darknet.programs import detector_test

    thresh = a.thresh if a.thresh is not None else (0.5 if a.flavor == "pjreddie" else 0.25)
    return detector_test(
        data=a.data, cfg=a.cfg, weights=a.weights, image=a.image, thresh=thresh, hier=a.hier, nms=a.nms, out_name=a.out,
        flavor=a.flavor, letter_box=a.letter_box, ext_output=a.ext_output, allow_partial=a.allow_partial, force=a.force,
        options=engine_options(a),
    )


def _partial(a: argparse.Namespace) -> int:
    from cnnlab.darknet.programs import partial

    return partial(cfg=a.cfg, weights=a.weights, outfile=a.out, n=a.n, flavor=a.flavor, force=a.force)


def _convert(a: argparse.Namespace) -> int:
    from cnnlab.darknet.programs import convert

    return convert(
        cfg=a.cfg, weights=a.weights, outfile=a.out, data=a.data, names_file=a.names, flavor=a.flavor,
        allow_partial=a.allow_partial, force=a.force,
    )


def _layers(a: argparse.Namespace) -> int:
    from cnnlab.darknet.model import load_darknet

    print(load_darknet(a.cfg, None, a.flavor).layer_table())
    return 0


def run(args: argparse.Namespace) -> int:
    return int(args._dn(args) or 0)
