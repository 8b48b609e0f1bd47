"""The early-stopping state both loops share (pipeline.training.stopping)."""

import math

from pipeline.training.stopping import EarlyStopping


def test_a_better_score_resets_and_patience_counts_only_after_min_epochs():
    stop = EarlyStopping(patience=2, min_epochs=2)
    assert stop.update(1, 0.5) and (stop.best_epoch, stop.bad_epochs) == (1, 0)
    assert not stop.update(2, 0.4) and stop.bad_epochs == 0  # epoch 2 <= min_epochs: not counted
    assert not stop.update(3, 0.5) and stop.bad_epochs == 1  # a tie is no improvement
    assert not stop.exhausted
    assert stop.update(4, 0.6) and (stop.best_score, stop.best_epoch, stop.bad_epochs) == (0.6, 4, 0)
    stop.update(5, 0.1)
    stop.update(6, 0.1)
    assert stop.exhausted and stop.best_epoch == 4


def test_its_state_round_trips_under_either_loops_key():
    stop = EarlyStopping(patience=3)
    assert stop.best_score == -math.inf
    stop.update(1, 0.3)
    stop.update(2, 0.2)
    for key in ("bad_epochs", "bad"):  # fuse's checkpoints, finetune's checkpoints
        saved = stop.state(bad_key=key)
        assert saved == {"best_score": 0.3, "best_epoch": 1, key: 1}
        again = EarlyStopping(patience=3)
        again.restore(saved, bad_key=key)
        assert again == stop
