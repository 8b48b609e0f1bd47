"""The run directory: the hand-off from stage two to stage three.

:mod:`.layout` is the one list of a run's files, :mod:`.record` its ``metrics.json`` (one schema,
one writer, one reader), :mod:`.predictions` the per-frame probabilities and face masks,
:mod:`.attention` the attention heads' maps, :mod:`.plots` the training curve. ``fusion`` writes
runs through this wing and ``scoring`` (with the ``ensemble``, ``cv`` and ``export`` stages) reads
them through it.
"""
