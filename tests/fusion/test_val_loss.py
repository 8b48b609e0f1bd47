"""The validation loss recorded per epoch: cross-entropy of the labelled frames, as scikit-learn's
``log_loss`` computes it."""

import numpy as np
from sklearn.metrics import log_loss

from pipeline.fusion.heads import Evaluator


def test_val_loss_is_the_log_loss_of_the_labelled_frames():
    rng = np.random.default_rng(0)
    evaluator = Evaluator(("fusion", "image"))
    probs, labels = [], []
    for n in (30, 45):  # two streamed tables
        p = {name: rng.dirichlet(np.ones(8), n) for name in ("fusion", "image")}
        y = rng.integers(-1, 8, n)
        evaluator.add(p, y)
        probs.append(p)
        labels.append(y)
    _, extra = evaluator.finish()
    y = np.concatenate(labels)
    for name in ("fusion", "image"):
        p = np.concatenate([t[name] for t in probs])
        expected = log_loss(y[y >= 0], p[y >= 0], labels=range(8))
        np.testing.assert_allclose(extra["val_loss"][name], expected, rtol=1e-9)
