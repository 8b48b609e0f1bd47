"""Suggestions ("did you mean ...?"): the closest names to a misspelt one (:mod:`difflib`), for
the one-line errors about an unknown head, extractor, preset, combiner or ``--set`` key."""

from __future__ import annotations

import difflib
from typing import Iterable

__all__ = ["closest", "did_you_mean"]


def closest(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """Up to ``n`` of ``choices`` that look like ``word``, closest first (case ignored)."""
    choices = list(dict.fromkeys(str(c) for c in choices))
    by_lower = {c.lower(): c for c in choices}
    # cutoff 0.6 (difflib's): "tensorbord" finds "tensorboard", "xyz" finds nothing
    return [by_lower[m] for m in difflib.get_close_matches(str(word).lower(), list(by_lower), n)]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean X?"`` (or ``X or Y``) to end an error message, or ``""`` when nothing is
    close."""
    matches = closest(word, choices)
    return f"; did you mean {' or '.join(matches)}?" if matches else ""
