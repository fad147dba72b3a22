"""Sparse-AsyLPG: AsyLPG whose gradients are sparsified, then quantized (Yu, Wu, Huang, 2019).

The worker keeps coordinate i of alpha with probability ``p_i = min(1, lam |alpha_i|)``, chosen so
that the expected number of survivors is the budget ``phi * n`` (Wangni et al.'s unbiased
sparsification), rescales survivors by ``1 / p_i`` and quantizes them with ``bits`` bits. The
payload carries the survivors' positions as a bitmap or as packed indices, whichever is smaller
(see :mod:`hvd_compress.ps.wire`). Models are pulled with AsyLPG's adaptive precision.

How to tune ``phi`` (fraction of coordinates kept on average, default 0.25): the bits per push
fall roughly as ``min(1, phi * log2 n) + phi * bits`` per coordinate while the variance of the
gradient grows as ``phi`` falls; for dense gradients 0.1-0.3 is the useful range, smaller values
need a smaller step size.

Example::

    from hvd_compress.ps import SparseAsyLPG, run, synthetic_logistic
    result = run(synthetic_logistic(), SparseAsyLPG(step_size=1.0, bits=8, phi=0.25), target_loss=0.35)
"""

from __future__ import annotations

from hvd_compress.ps import wire
from hvd_compress.ps.asylpg import AsyLPG


class SparseAsyLPG(AsyLPG):
    """AsyLPG with unbiased sparsification of the gradient to an expected ``phi`` fraction."""

    name = "Sparse-AsyLPG"

    def __init__(
        self, step_size: float = 0.5, bits: int = 8, mu: float = 0.5, phi: float = 0.25, max_model_bits: int = 24
    ):
        super().__init__(step_size, bits, mu, max_model_bits)
        if not 0 < phi <= 1:
            raise ValueError(f"phi (the fraction of coordinates kept) must be in (0, 1], got {phi}")
        self.phi = float(phi)

    def settings(self):
        return {**super().settings(), "phi": self.phi}

    def encode_gradient(self, g, rng):
        return wire.sparse(g, self.bits, self.phi * g.size, rng)
