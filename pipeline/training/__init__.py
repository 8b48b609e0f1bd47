"""The training loops' shared pieces, below both ``finetune`` and ``fusion`` (learning-rate
schedules: :mod:`pipeline.training.schedules`)."""
