"""Which keys darknet reads in each cfg section, to warn about the others as darknet does ("Unused field").

Extracted from the ``option_find*(options, "KEY", ...)`` calls of ``src/parser.c`` in pjreddie/darknet
f6afaab and AlexeyAB/darknet 59596d7 (the builds of the reference oracle, shared/darknet/README.md):
the union of both, per section, plus the keys ``parse_network_cfg`` reads in every section. A key in
neither is read by no darknet (a typo such as ``filers=``, or an option of another framework); a
key one darknet reads but cnnlab does not use (training-only options, say) is not reported, as
darknet does not report it either.
"""

from __future__ import annotations

import sys
from typing import TextIO

# keys read in every layer section (parse_network_cfg / parse_network_cfg_custom)
EVERY_SECTION = frozenset(
    ["burnin_update", "clip", "dont_update", "dontload", "dontloadscales", "dontsave", "learning_rate", "numload", "onlyforward", "show_receptive_field", "smooth", "stopbackward", "train_only_bn", "truth"]
)

_KEYS = {
    "Gaussian_yolo": (
        "anchors beta_nms classes cls_normalizer counters_per_class delta_normalizer ignore_thresh "
        "iou_loss iou_normalizer iou_thresh iou_thresh_kind jitter label_smooth_eps map mask max "
        "max_delta nms_kind num obj_normalizer objectness_smooth random resize scale_x_y truth_thresh "
        "uc_normalizer yolo_point"
    ),
    "activation": "activation",
    "connected": "activation batch_normalize output",
    "contrastive": "classes cls_normalizer contrastive_neg_max max_delta temperature yolo_layer",
    "conv_lstm": (
        "activation batch_normalize bottleneck dilation groups lstm_activation output pad padding "
        "peephole shortcut size state_constrain stride time_normalizer xnor"
    ),
    "convolutional": (
        "activation angle antialiasing assisted_excitation batch_normalize bin_output binary cbn "
        "coordconv dilation dot filters flipped grad_centr groups pad padding reverse rotate share_index "
        "size stream stretch stretch_sway stride stride_x stride_y sway wait_stream xnor"
    ),
    "cost": "noobj ratio scale thresh type",
    "crnn": (
        "activation batch_normalize dilation groups hidden hidden_filters output output_filters pad "
        "padding shortcut size stride xnor"
    ),
    "crop": "angle crop_height crop_width exposure flip noadjust saturation shift",
    "deconvolutional": "activation batch_normalize filters pad padding size stride",
    "detection": (
        "class_scale classes coord_scale coords forced jitter max noobject_scale num object_scale random "
        "reorg rescore resize side softmax sqrt"
    ),
    "dropout": "dropblock dropblock_size_abs dropblock_size_rel probability",
    "gru": "batch_normalize output tanh",
    "history": "history_size",
    "implicit": "atoms filters mean std",
    "iseg": "classes ids",
    "local": "activation filters pad size stride",
    "local_avgpool": "padding size stride stride_x stride_y",
    "lstm": "batch_normalize output",
    "maxpool": (
        "antialiasing maxpool_depth maxpool_zero_nonmax out_channels padding size stride stride_x "
        "stride_y"
    ),
    "net": (
        "B1 B2 adam adversarial_lr angle aspect attention augment_speed badlabels_rejection_percentage "
        "batch blur burn_in center channels clip contrastive contrastive_color contrastive_jit_flip "
        "cutmix decay dynamic_minibatch ema_alpha eps equidistant_point exposure flip gamma "
        "gaussian_noise height hue inputs label_smooth_eps learning_rate learning_rate_min letter_box "
        "loss_scale max_batches max_chart_loss max_crop max_ratio min_crop min_ratio mixup momentum "
        "mosaic mosaic_bound notruth num_sigmas_reject_badlabels optimized_memory policy power random "
        "resize_step saturation scale scales seq_scales sequential_subdivisions sgdr_cycle sgdr_mult step "
        "steps subdivisions time_steps track try_fix_nan unsupervised use_cuda_graph weights_reject_freq "
        "width workspace_size_limit_MB"
    ),
    "normalization": "alpha beta kappa size",
    "region": (
        "absolute anchors background bias_match class_scale classes classfix coord_scale coords "
        "focal_loss jitter log map mask_scale max noobject_scale num object_scale random rescore resize "
        "softmax sqrt thresh tree"
    ),
    "reorg": "extra flatten reverse stride",
    "rnn": "activation batch_normalize hidden logistic output shortcut",
    "route": "group_id groups layers stream wait_stream",
    "sam": "activation from",
    "scale_channels": "activation from scale_wh",
    "shortcut": "activation alpha beta from weights_normalization weights_type",
    "softmax": "groups noloss spatial temperature tree",
    "upsample": "scale stride",
    "yolo": (
        "anchors beta_nms classes cls_normalizer counters_per_class delta_normalizer dets_for_show "
        "dets_for_track embedding_layer focal_loss ignore_thresh iou_loss iou_normalizer iou_thresh "
        "iou_thresh_kind jitter label_smooth_eps map mask max max_delta new_coords nms_kind num "
        "obj_normalizer objectness_smooth random resize scale_x_y show_details sim_thresh track_ciou_norm "
        "track_history_size truth_thresh"
    ),
}

# section type (canonical name, see cfg.ALIASES) -> the keys darknet reads there
KNOWN_KEYS: dict[str, frozenset[str]] = {section: frozenset(keys.split()) for section, keys in _KEYS.items()}

_warned: set[tuple[str, int, str]] = set()  # (cfg, section line, key): each reported once per process


def unknown_options(sections: list) -> list[tuple[object, str]]:
    """``(section, key)`` for every option no darknet reads in that section type (``sections`` from parse_cfg)."""
    found = []
    for sec in sections:
        known = KNOWN_KEYS.get(sec.type, frozenset())
        if sec.type != "net":
            known = known | EVERY_SECTION
        found.extend((sec, key) for key in sec.options if key not in known)
    return found


def warn_unknown_options(sections: list, err: TextIO | None = None) -> None:
    """darknet's "Unused field" warning, once per key and section, on stderr: an ignored key is often a typo."""
    for sec, key in unknown_options(sections):
        mark = (sec.source, sec.line, key)
        if mark in _warned:
            continue
        _warned.add(mark)
        print(
            f"warning: {sec.where(key)}: [{sec.raw_type or sec.type}] {key}={sec.options[key]} is not an option darknet reads "
            "there; it is ignored (darknet: Unused field)",
            file=err or sys.stderr,
        )
