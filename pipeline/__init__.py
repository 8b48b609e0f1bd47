"""fer-pipeline: feature extraction, fusion heads and scoring for audio-visual expression recognition.

The library has five wings. Data flows through them in this order:

    data (labels, dataset reader, manifests, media, demo data)
      -> finetune (stage 0, optional: trains a backbone, writes weights that features load)
      -> features (extractors, the Zarr store, the fine-tuned weights folder's format)
        -> fusion (windows, sampling, losses, heads, training)
          -> scoring (metrics, combiners, cross-fitting, reports, submissions)

Imports point the other way, from a wing to the wings it stands on, in one fixed order:
``finetune -> fusion -> scoring -> features -> data``. ``finetune`` runs beside ``features`` but
imports from the top: it trains with the heads' losses, sampling and train-dev slice
(``fusion``) and scores with ``scoring.metrics``; nothing imports it (the weights folder's format
lives in ``features``). A wing imports only wings to its right: ``fusion``
scores itself with ``scoring.metrics`` and writes ``scoring.predictions``, so ``scoring`` sits
below ``fusion`` although it runs after it; ``scoring`` needs nothing of ``features``.
``tests/test_layering.py`` holds the code to this order. Top-level modules (``config``, ``io``,
``errors``, ``parallel``, ``progress``, ``compat``) serve every wing and import no wing.

Nothing in this package prints; progress goes through a callback (:mod:`pipeline.progress`).
"""

__version__ = "0.1.0"
