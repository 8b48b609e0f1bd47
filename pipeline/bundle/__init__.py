"""Stage four: a finished pipeline as one self-contained folder, and applying it to new videos.

:mod:`pipeline.bundle.format` is the folder's format (its version, the sha256 manifest, reading
and verifying); :mod:`pipeline.bundle.build` writes a bundle from an ensemble's ``scores.json``
and its run directories; :mod:`pipeline.bundle.heads` runs the member heads on a feature store;
:mod:`pipeline.bundle.decide` applies the ensemble's fitted decisions and builds the per-frame
table. Finding faces and extracting features are stages (``stages.predict`` chains them).
"""
