"""ImageNet preparation: URL lists, ILSVRC archives + devkit, bounding boxes, synset metadata.

Every command writes the class-folder layout ``DIR/train/<wnid>/*.JPEG``, ``DIR/val/<wnid>/*.JPEG``,
``DIR/labels.txt`` (sorted wnids), ``DIR/synsets.tsv`` and ``DIR/report.json``; state needed to
resume lives under ``DIR/.cnnlab/`` so class-folder readers never see it.
"""
