"""fer-pipeline: feature extraction, fusion heads and scoring for audio-visual expression recognition.

The library has nine wings. Data flows through them in this order:

    data (labels, dataset reader, manifests, media, demo data)
      -> finetune (stage 0, optional: trains a backbone, writes weights that features load)
      -> features (extractors, the Zarr store, the fine-tuned weights folder's format)
        -> fusion (heads, their data streams, their training run)  writes run directories
          -> scoring (combiners, cross-fitting, reports, submissions)  reads them
            -> bundle (stage 4: the pipeline folder, its heads and decisions on new videos)

Imports point the other way, from a wing to the wings it stands on, in fixed tiers:

    bundle -> {finetune, fusion, scoring} -> training -> runs -> metrics -> features -> data

``bundle`` sits on top: it rebuilds the heads (``fusion``) and applies stage three's fitted
decisions (``scoring``) and reads the store (``features``); nothing imports it.

``finetune``, ``fusion`` and ``scoring`` share a tier: none imports another. The two training
stages (``finetune`` and ``fusion``) stand on ``training``, the wing of what both train with: the
losses, sampling rates, train-dev slice and folds, label windows, mixture of experts and the class
layers' config, layer-wise learning-rate decay, learning-rate schedules, the early-stopping state,
the determinism set-up, the optimiser factory and the step (GradScaler, ``no_sync`` under
accumulation). ``fusion`` and ``scoring`` meet in ``runs`` (the run directory: its layout, the
typed record ``metrics.json``, predictions, attention maps, the training curve) and stand on
``metrics`` (expression and AU scores, the weight and bias searches, the probability mean a bag
and an ensemble both form). Nothing imports ``finetune`` (the weights folder's format lives in
``features``). ``runs``, ``metrics`` and ``scoring`` need nothing of ``features``.
``tests/test_layering.py`` holds the code to this order. Top-level modules (``config``, ``io``,
``errors``, ``locks``, ``parallel``, ``progress``, ``compat``) serve every wing and import no wing.

Nothing in this package prints; progress goes through a callback (:mod:`pipeline.progress`).
"""

__version__ = "0.1.0"
