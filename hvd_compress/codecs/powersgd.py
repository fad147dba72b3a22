"""PowerSGD (Vogels et al., NeurIPS 2019) as a numpy reference of its whole exchange.

Not a payload format: two dependent allreduces per step. :meth:`PowerSGD.reduce` takes every
rank's gradient and the codec's state and simulates the step all ranks take together (the
algorithm, the knobs and the tuning advice are in ``hvd_compress/torch/codecs/powersgd.py``, the
torch codec this matches within fp32 rounding: ``tests/test_reducer_references.py``)::

    M_i = g_i + e_i                     # each rank's error feedback
    Q = orthogonalize(Q_prev)           # warm start (state["q"])
    P = orthogonalize(sum_i M_i Q)      # round "p": n x r fp32 from every rank
    Q = mean_i M_i^T P                  # round "q": m x r fp32 from every rank
    result = P Q^T;  e_i = M_i - P Q^T

Before ``start_iter`` steps, and for matrices where the factors would not save
``min_compression_rate`` times, the step is one fp32 allreduce (round ``"full"``).

The first Q is random (the same on every rank). Each framework draws it from its own generator
(torch: ``torch.randn`` seeded by the codec seed and the tensor name), so the reference takes it
from ``state["q"]``; without one it draws ``numpy.random.default_rng(seed).standard_normal``,
which is not torch's stream.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from hvd_compress.codecs.reduction import Reduction, as_grads, rank_mean, rank_sum
from hvd_compress.core.registry import register_codec
from hvd_compress.core.spec import CodecSpec


def matrix_shape(shape: Sequence[int]) -> Tuple[int, int]:
    """``shape[0] x rest`` (torch's layout; a 1-D tensor is ``1 x n``, a scalar ``1 x 1``)."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    n = shape[0]
    return n, (math.prod(shape) // n if n else 0)


def orthogonalize(m: np.ndarray, epsilon: float = 0.0) -> np.ndarray:
    """Orthonormal columns of ``m`` (rows x r), a new array: Gram-Schmidt for ``r <= 2`` (a zero
    column stays zero when ``epsilon`` is 0), QR beyond (column signs may differ from another
    library's QR, which leaves ``P Q^T`` unchanged)."""
    m = np.array(m, np.float32, copy=True)
    r = m.shape[1]
    if r > 2:
        return np.linalg.qr(m)[0].astype(np.float32)
    for i in range(r):
        col = m[:, i : i + 1]
        norm = np.float32(np.linalg.norm(col))
        if epsilon == 0:
            if norm > 0:
                col /= norm
            else:
                col[:] = 0
        else:
            col /= norm + np.float32(epsilon)
        if i + 1 < r:
            rest = m[:, i + 1 :]
            rest -= (col * rest).sum(axis=0, keepdims=True) * col
    return m


@register_codec("powersgd", builtin=True)
@dataclass(frozen=True)
class PowerSGD(CodecSpec):
    """Rank-``rank`` PowerSGD with warm start and error feedback, per matrix-shaped tensor.

    State (a dict, one tensor's): ``step`` (exchanges so far), ``q`` (the warm-start Q, ``m x r``
    fp32, or absent), ``residual`` (a list of each rank's flat fp32 ``e_i``, or absent).

    Args: as the torch codec's (``rank``, ``start_iter``, ``min_compression_rate``,
    ``error_feedback``, ``warm_start``, ``orthogonalization_epsilon``).
    """

    rank: int = 1
    start_iter: int = 1000
    min_compression_rate: float = 2.0
    error_feedback: bool = True
    warm_start: bool = True
    orthogonalization_epsilon: float = 0.0

    stochastic = False

    def __post_init__(self):
        if isinstance(self.rank, bool) or int(self.rank) != self.rank or self.rank < 1:
            raise ValueError(f"PowerSGD rank must be a positive integer, got {self.rank}")
        if isinstance(self.start_iter, bool) or int(self.start_iter) != self.start_iter or self.start_iter < 0:
            raise ValueError(f"start_iter must be a non-negative integer, got {self.start_iter}")
        if not self.min_compression_rate > 0:
            raise ValueError(f"min_compression_rate must be positive, got {self.min_compression_rate}")
        if not self.orthogonalization_epsilon >= 0:
            raise ValueError(f"orthogonalization_epsilon must be >= 0, got {self.orthogonalization_epsilon}")
        object.__setattr__(self, "min_compression_rate", float(self.min_compression_rate))
        object.__setattr__(self, "orthogonalization_epsilon", float(self.orthogonalization_epsilon))

    # ------------------------------------------------------------------ sizes
    def effective_rank(self, shape) -> int:
        n, m = matrix_shape(shape)
        return max(0, min(n, m, self.rank))

    def worth_compressing(self, shape) -> bool:
        """``(n + m) * r * min_compression_rate < n * m``."""
        n, m = matrix_shape(shape)
        r = self.effective_rank(shape)
        return r > 0 and (n + m) * r * self.min_compression_rate < n * m

    def payload_nbytes_for(self, shape) -> int:
        """Bytes one rank sends for a tensor of ``shape``: P and Q, or the fp32 tensor."""
        n, m = matrix_shape(shape)
        if not self.worth_compressing(shape):
            return 4 * n * m
        return 4 * (n + m) * self.effective_rank(shape)

    def payload_nbytes(self, numel):
        side = max(1, math.isqrt(max(numel, 1)))  # shape unknown: as if square
        return self.payload_nbytes_for((side, max(1, numel // side)))

    def encode(self, x, rng=None, *, noise=None):
        raise ValueError(
            "PowerSGD has no single-payload format: simulate the exchange with reduce(grads, state, shape)"
        )

    def decode(self, payload, numel):
        raise ValueError(
            "PowerSGD has no single-payload format: simulate the exchange with reduce(grads, state, shape)"
        )

    # ------------------------------------------------------------------ the exchange
    def initial_q(self, m: int, r: int, seed: int = 0) -> np.ndarray:
        """A random start for Q (numpy's stream; each framework seeds its own generator)."""
        return np.random.default_rng(seed).standard_normal((m, r)).astype(np.float32)

    def reduce(
        self,
        grads: Sequence[np.ndarray],
        state: Optional[Dict[str, Any]] = None,
        shape: Optional[Sequence[int]] = None,
        *,
        initial_q: Optional[np.ndarray] = None,
    ) -> Reduction:
        """One step of every rank on one tensor: ``grads`` by rank (any shape; ``shape`` says
        how to view them, default the first gradient's), ``state`` as the last call returned.
        ``initial_q`` (``m x r``) is the random start used where there is no warm-start Q (the
        first step, or every step without ``warm_start``); default :meth:`initial_q`."""
        shape = tuple(np.shape(grads[0]) if shape is None else shape)
        flats = as_grads(grads)
        numel, size = flats[0].size, len(flats)
        state = dict(state or {})
        step = int(state.get("step", 0))
        state["step"] = step + 1
        if step < self.start_iter or not self.worth_compressing(shape):
            return Reduction(rank_mean(flats), state, [("full", [4 * numel] * size)])
        n, m = matrix_shape(shape)
        r = self.effective_rank(shape)
        residuals = state.get("residual")
        ms = []
        for i, g in enumerate(flats):
            e = residuals[i] if self.error_feedback and residuals is not None else None
            ms.append((g + e if e is not None and e.size == numel else g).reshape(n, m))
        q_prev = state.get("q") if self.warm_start else None
        if q_prev is not None and q_prev.shape == (m, r):
            q = q_prev
        else:
            q = self.initial_q(m, r) if initial_q is None else np.asarray(initial_q, np.float32).reshape(m, r)
        q = orthogonalize(q, self.orthogonalization_epsilon)
        p = orthogonalize(rank_sum([mi @ q for mi in ms]), self.orthogonalization_epsilon)
        q = rank_mean([mi.T @ p for mi in ms])
        approx = p @ q.T
        finite = bool(np.isfinite(q).all() and np.isfinite(p).all())
        if self.warm_start and finite:  # a non-finite step keeps the previous Q
            state["q"] = q.copy()
        if self.error_feedback:
            state["residual"] = [(mi - approx).reshape(-1) if finite else np.zeros(numel, np.float32) for mi in ms]
        return Reduction(
            approx.reshape(-1).astype(np.float32), state, [("p", [4 * n * r] * size), ("q", [4 * m * r] * size)]
        )
