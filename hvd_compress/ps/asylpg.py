"""AsyLPG: asynchronous low-precision SVRG with double quantization (Yu, Wu, Huang, NeurIPS 2019).

Both directions are quantized with the unbiased b-bit quantizer ``Q(v, b)`` of
:mod:`hvd_compress.lowprec` (grid ``delta * {-s..s}``, ``s = 2**(b-1) - 1``,
``delta = ||v||_inf / s``, stochastic rounding):

* **model, server -> worker, adaptive precision**: the fewest bits ``b_x`` with
  ``E||Q(x) - x||^2 <= mu * ||x - x_snapshot||^2`` (computed exactly for the shard's slice). Early
  in an epoch ``x`` is close to the snapshot and needs many bits; the further the model moves, the
  coarser it may be sent. When ``x`` is the snapshot itself only "same" (no payload) qualifies;
  when no ``b_x <= max_model_bits`` qualifies the slice goes in fp32.
* **gradient, worker -> server, fixed precision**: ``Q(alpha, bits)`` of the SVRG gradient.

Knobs and how to tune them:

* ``bits`` (default 8): the gradient's width. 8 bits matched full precision in the paper; 4 bits
  usually still converges at the same step size with SVRG, since alpha's variance shrinks near
  the optimum.
* ``mu`` (default 0.5): the model-precision budget. Smaller is more precise (more bits per pull),
  larger saves bits and adds gradient noise; the paper's analysis wants mu below ~1.
* ``max_model_bits`` (default 24): beyond it the model is sent in fp32.

Example::

    from hvd_compress.ps import AsyLPG, run, synthetic_logistic
    result = run(synthetic_logistic(), AsyLPG(step_size=1.0, bits=8, mu=0.5), target_loss=0.35)
    print(result.bits_to_target, result.model_bits_mean)
"""

from __future__ import annotations

import numpy as np

from hvd_compress import lowprec
from hvd_compress.ps import wire
from hvd_compress.ps.svrg import AsyncSVRG


class AsyLPG(AsyncSVRG):
    """Double quantization: adaptive-precision model pulls, ``bits``-bit gradient pushes."""

    name = "AsyLPG"

    def __init__(self, step_size: float = 0.5, bits: int = 8, mu: float = 0.5, max_model_bits: int = 24):
        super().__init__(step_size)
        if not lowprec.MIN_BITS <= int(bits) <= lowprec.MAX_BITS:
            raise ValueError(f"bits must be in [{lowprec.MIN_BITS}, {lowprec.MAX_BITS}], got {bits}")
        if not mu > 0:
            raise ValueError(f"mu must be positive, got {mu}")
        if not lowprec.MIN_BITS <= int(max_model_bits) <= lowprec.MAX_BITS:
            raise ValueError(f"max_model_bits must be in [{lowprec.MIN_BITS}, {lowprec.MAX_BITS}]")
        self.bits, self.mu, self.max_model_bits = int(bits), float(mu), int(max_model_bits)

    def settings(self):
        return {**super().settings(), "bits": self.bits, "mu": self.mu}

    def encode_model(self, v, snapshot, rng):
        if np.array_equal(v, snapshot):
            return "same", 0, np.zeros(0, np.uint8)
        diff = v - snapshot
        budget = self.mu * float(np.dot(diff, diff))
        bits = lowprec.fewest_bits(v, budget, range(lowprec.MIN_BITS, self.max_model_bits + 1))
        if bits is None:
            return wire.fp32(v)
        return wire.quant(v, bits, rng)

    def encode_gradient(self, g, rng):
        return wire.quant(g, self.bits, rng)
