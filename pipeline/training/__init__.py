"""The training wing: what both training stages train with, below ``finetune`` (stage 0, a
backbone: :mod:`pipeline.finetune.loop`) and ``fusion`` (stage two, the heads:
:mod:`pipeline.fusion.training_run`), which are siblings and never import each other.

What both loops call: the early-stopping state (:mod:`~pipeline.training.stopping`), the
determinism set-up (:mod:`~pipeline.training.determinism`), the optimiser factory from parameter
groups (:mod:`~pipeline.training.optim`) with layer-wise learning-rate decay
(:mod:`~pipeline.training.layer_decay`) and the learning-rate schedules
(:mod:`~pipeline.training.schedules`), and the step (:mod:`~pipeline.training.step`: gradient
accumulation, ``no_sync`` under DDP, the fp16 GradScaler, clipping). What both train on: the
losses, the class rates and draws (:mod:`~pipeline.training.sampling`), the train-dev slice and
folds (:mod:`~pipeline.training.folds`), the label windows, the class layers' config and their
mixture of experts (:mod:`~pipeline.training.config`, :mod:`~pipeline.training.moe`), the class
check, the multi-task schedules (:mod:`~pipeline.training.tasks`) and DAN's units and losses.

**Why two loops, not one.** The epochs differ in everything but these pieces. ``fuse`` streams
tables of stored features a group of clips at a time (:mod:`pipeline.fusion.stream`), draws every
example from one numpy generator in a fixed order (the draws are part of its byte-identical
runs), asks the task schedule for each batch, keeps a moving average of the weights that the
selection pass scores, fits a head's own choices on the selection clips, steps its schedule per
epoch and writes a run directory. ``finetune`` feeds images or audio through DataLoaders over a
plan drawn from ``(seed, epoch)`` (so a killed run resumes bit for bit), under DDP and autocast
with accumulation, steps its schedule per optimiser step, and writes a weights folder. One loop
would be a loop of options for either; the pieces above are what they truly share.
"""
