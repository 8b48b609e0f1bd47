"""Stage 0, ``fer-pipeline finetune``: train a face or audio backbone on the labelled training
clips and write a weights folder (:mod:`pipeline.features.weights_record`) that stage one loads
unchanged and freezes.

Modules: :mod:`~pipeline.finetune.config` (the options), :mod:`~pipeline.finetune.backbones`
(what differs per backbone: the network, its samples, its augmentation and preprocessing),
:mod:`~pipeline.finetune.loop` (one seeded, resumable, DDP-aware training loop),
:mod:`~pipeline.finetune.split` (the train-dev slice and the AU-only clips),
:mod:`~pipeline.finetune.model` (the class layers: linear, MoE, or DAN's heads end to end).

In the data flow it sits beside ``features`` (it reads data and writes weights that features
load); in the import order it is a sibling of stage two's heads on one tier: both train with the
shared wing :mod:`pipeline.training` (losses, sampling rates, train-dev slice, early stopping,
optimiser, determinism) and neither imports the other.
"""
