"""Which samples train in an epoch, in which order and batches: a function of ``(seed, epoch)``.

:func:`epoch_plan` draws each sample's count with the heads' class rates
(:func:`pipeline.training.sampling.draw`) and shuffles; :func:`batches` cuts the plan into batches
of one input shape and hands each DDP process its part (:class:`Dist`: this process's rank among
how many, from ``torchrun``'s environment). Nothing here keeps state, so a resumed run redraws
exactly the epoch it lost.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from pipeline.finetune.samples import Samples
from pipeline.training import sampling

MIN_BATCH = 2  # fewest samples per process in a training step (BatchNorm needs two)


@dataclass
class Dist:
    """This process among the DDP processes (one process: rank 0 of 1)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls) -> "Dist":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        return cls(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))

    def barrier(self) -> None:
        if self.world > 1:
            torch.distributed.barrier()


def epoch_plan(samples: Samples, rates: np.ndarray, seed: int, epoch: int
               ) -> tuple[np.ndarray, np.ndarray]:
    """(sample indices in training order, one augmentation seed each) for ``epoch``: the heads'
    class-rate draw, shuffled; a function of ``(seed, epoch)`` alone, so a resumed run redraws it."""
    rng = np.random.default_rng([seed, epoch])
    counts = sampling.draw(samples.label, np.ones(len(samples), dtype=bool), rates, rng)
    plan = np.repeat(np.arange(len(samples)), counts)
    rng.shuffle(plan)
    return plan, rng.integers(0, 2**31 - 1, size=len(plan))


def batches(keys: np.ndarray, size: int, world: int, rank: int, seed: int, epoch: int
            ) -> list[list[int]]:
    """This process's batches (positions into the epoch's plan) of one epoch.

    Global batches of ``size`` consecutive plan positions with one shape key each (in plan order
    within a key), visited in an order drawn from ``(seed, epoch)``; each is cut to a multiple of
    ``world`` and process ``rank`` takes every ``world``-th position of it, so every process runs
    the same number of steps (DDP needs that).

    A batch that would give each process fewer than :data:`MIN_BATCH` samples is dropped (the
    training loader's ``drop_last``, for the lone remainder only): BatchNorm in training mode
    needs more than one value per channel (IResNet's final ``BatchNorm1d`` raises on one sample;
    a BatchNorm2d's statistics over one image would be one picture's). The plan is redrawn every
    epoch, so which sample sits out changes from epoch to epoch."""
    cut: list[np.ndarray] = []
    for key in np.unique(keys):
        positions = np.flatnonzero(keys == key)
        cut.extend(positions[i:i + size] for i in range(0, len(positions), size))
    order = np.random.default_rng([seed, epoch, 1]).permutation(len(cut))
    out = []
    for b in order:
        batch = cut[b][:len(cut[b]) // world * world]
        if len(batch) >= MIN_BATCH * world:
            out.append([int(p) for p in batch[rank::world]])
    return out
