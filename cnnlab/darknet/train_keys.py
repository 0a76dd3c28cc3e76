"""The darknet training options a cfg sets that cnnlab's detector training does not implement.

Darknet itself reads them silently; a user moving a cfg from darknet to cnnlab should hear, by name,
which of its settings will not act. The lists are darknet's own keys (AlexeyAB's parser.c) minus
what :mod:`cnnlab.darknet.schedule`, :mod:`cnnlab.darknet.box_augment` and
:mod:`cnnlab.darknet.yolo_loss` read; keys that only concern GPUs, charts or video tracking are
left out (they change nothing in a CPU training's result).
"""

from __future__ import annotations

from cnnlab.darknet.cfg import Section

_NOT_IMPLEMENTED = {
    "net": (
        "adam B1 B2 eps adversarial_lr attention badlabels_rejection_percentage num_sigmas_reject_badlabels "
        "equidistant_point blur gaussian_noise mixup cutmix contrastive contrastive_color contrastive_jit_flip "
        "unsupervised dynamic_minibatch ema_alpha mosaic_bound sequential_subdivisions seq_scales "
        "weights_reject_freq try_fix_nan learning_rate_min sgdr_cycle sgdr_mult"
    ).split(),
    "yolo": "map embedding_layer track_history_size sim_thresh dets_for_track track_ciou_norm".split(),
    "region": "tree map classfix log sqrt mask_scale".split(),
}


def unimplemented_keys(sections: list[Section]) -> list[str]:
    """``[section] key=value (file:line)`` for every such key set in the cfg, in cfg order."""
    found = []
    for sec in sections:
        keys = [k for k in _NOT_IMPLEMENTED.get(sec.type, ()) if sec.has(k)]
        if sec.type == "region" and sec.int("coords", 4) != 4:
            keys.append("coords")
        for key in sorted(keys, key=lambda k: sec.option_lines.get(k, 0)):
            found.append(f"[{sec.type}] {key}={sec.options[key]} ({sec.where(key)})")
    return found
