"""fer-pipeline: feature extraction, fusion heads and scoring for audio-visual expression recognition.

The library has four wings. Data flows through them in this order:

    data (labels, dataset reader, manifests, media, demo data)
      -> features (extractors, the Zarr store)
        -> fusion (windows, sampling, losses, heads, training)
          -> scoring (metrics, combiners, cross-fitting, reports, submissions)

Imports point the other way, from a wing to the wings it stands on, in one fixed order:
``fusion -> scoring -> features -> data``. A wing imports only wings to its right: ``fusion``
scores itself with ``scoring.metrics`` and writes ``scoring.predictions``, so ``scoring`` sits
below ``fusion`` although it runs after it; ``scoring`` needs nothing of ``features``.
``tests/test_layering.py`` holds the code to this order. Top-level modules (``config``, ``io``,
``errors``, ``parallel``, ``progress``, ``compat``) serve every wing and import no wing.

Nothing in this package prints; progress goes through a callback (:mod:`pipeline.progress`).
"""

__version__ = "0.1.0"
