"""What the numpy references of the multi-round codecs return: one whole exchange, simulated.

PowerSGD, GradiVeQ and DoubleSqueeze have no single self-contained payload: their definition is an
exchange over every rank. Their references take every rank's gradient (a list, by rank) and the
codec's state, and return a :class:`Reduction`: the values every rank ends with, the new state,
and the bytes each rank hands to each collective round.
"""

from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Sequence, Tuple

import numpy as np


class Reduction(NamedTuple):
    """One simulated exchange of one tensor.

    ``values``: the flat fp32 result every rank ends with (the average of the gradients, as the
    codec approximates it). ``state``: the codec's state after the step (a new dict; the one passed
    in is not changed). ``rounds``: per collective round, in order, ``(name, bytes per rank)``:
    the size of the buffer each rank hands to that collective (allreduce: its summand; alltoall:
    its payloads for every owner; allgather: its own part; broadcast: the root's buffer, which
    every rank passes in the same size).
    """

    values: np.ndarray
    state: Dict[str, Any]
    rounds: List[Tuple[str, List[int]]]


def as_grads(grads: Sequence[np.ndarray]) -> List[np.ndarray]:
    """Every rank's gradient as flat fp32 (same size on every rank)."""
    out = [np.asarray(g, np.float32).reshape(-1) for g in grads]
    if not out:
        raise ValueError("a reduction needs at least one rank's gradient")
    if len({g.size for g in out}) != 1:
        raise ValueError(f"every rank's gradient must have the same size, got {[g.size for g in out]}")
    return out


def rank_sum(parts: Sequence[np.ndarray]) -> np.ndarray:
    """Sum in rank order, in the parts' dtype (what a ring allreduce that adds rank by rank does)."""
    total = np.array(parts[0], copy=True)
    for p in parts[1:]:
        total += p
    return total


def rank_mean(parts: Sequence[np.ndarray]) -> np.ndarray:
    """:func:`rank_sum` divided by the number of ranks."""
    return (rank_sum(parts) / np.float32(len(parts))).astype(np.float32)
