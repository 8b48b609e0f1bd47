"""The training loops' shared pieces, below both ``finetune`` and ``fusion`` (learning-rate
schedules: :mod:`pipeline.training.schedules`; DAN's attention units and losses:
:mod:`pipeline.training.dan`; the multi-task schedules: :mod:`pipeline.training.tasks`)."""
