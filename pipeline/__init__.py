"""fer-pipeline: feature extraction, fusion heads and scoring for audio-visual expression recognition.

Wings follow the data flow (imports point downwards only):
``data`` (labels, dataset reader, manifests, media, demo data) -> ``features`` (extractors, Zarr
store) -> ``fusion`` (windows, sampling, losses, heads, training) -> ``scoring`` (metrics,
ensembles, reports, submissions). Nothing in this package prints; progress goes through a callback
(:mod:`pipeline.progress`).
"""

__version__ = "0.1.0"
