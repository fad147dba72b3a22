"""GradiVeQ (Yu et al., NeurIPS 2018): PCA vector quantization whose payloads sum in a ring allreduce.

No public implementation of the paper exists; this one follows ``shared/ALGORITHMS.md``:
layout, slicing, per-layer PCA by the energy rule, mean handling, one allreduce(Sum) of the
compressed slices and one decompression after it, and the warm-up / sampling / compressed schedule.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Tuple

import torch

from hvd_compress.common import (
    GRADIVEQ_PHASES,
    GradiVeQFormat,
    compression_report_rows,
    filters_and_positions,
    slice_geometry_fp,
)
from hvd_compress.core.state import GradiVeQState
from hvd_compress.torch.codecs.base import Codec
from hvd_compress.torch.codecs.catalog import from_spec_with
from hvd_compress.torch.codecs.powersgd import tracked_allreduce

PHASES = GRADIVEQ_PHASES


# ---------------------------------------------------------------------------- pure math
def is_conv_kernel(shape: Sequence[int]) -> bool:
    """Conv kernels (``F x C x k...``: conv1d/2d/3d weights) are what GradiVeQ compresses."""
    return len(shape) >= 3


def slice_geometry(
    shape: Sequence[int], slice_size: int, samples: Optional[int] = None, samples_per_dim: float = 0.0
) -> Tuple[int, int, int, int, int]:
    """``(F, P, D, K, S)`` for a torch kernel of ``shape`` (``F = shape[0]`` filters of
    ``P = C*k*...`` positions); see :func:`hvd_compress.common.slice_geometry_fp`."""
    f, p = filters_and_positions(shape, 0)
    return slice_geometry_fp(f, p, slice_size, samples, samples_per_dim)


def to_slices(flat: torch.Tensor, shape: Sequence[int], k: int) -> torch.Tensor:
    """The paper's layout: the values at the same position across all ``F`` filters adjacent, cut
    into slices of ``K = k`` values (a multiple of ``F``): an ``S x K`` matrix (row ``s`` holds
    positions ``s*D .. s*D+D-1``, each followed through filters ``0..F-1``)."""
    f = int(shape[0])
    if k % f:
        raise ValueError(f"slice length {k} is not a multiple of the {f} filters")
    return flat.reshape(f, -1).t().reshape(-1, k)


def from_slices(slices: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Inverse of :func:`to_slices`: back to the flat tensor in ``shape``'s memory order."""
    f = int(shape[0])
    return slices.reshape(-1, f).t().reshape(-1)


def fit_basis(count: int, total: torch.Tensor, outer: torch.Tensor, energy: float, dim: Optional[int] = None):
    """PCA of sampled slices from their moments: ``count`` slices, ``total`` = their sum (K),
    ``outer`` = the sum of their outer products (K x K), float64.

    Returns ``(U_d, mu, d, eigenvalues)``: the top-``d`` eigenvectors of the slice covariance
    (K x d, fp32, orthonormal columns), the mean slice ``mu`` (K, fp32), the smallest ``d`` whose
    top-``d`` eigenvalues hold at least ``energy`` of the total variance (at least 1), and all the
    eigenvalues, descending (float64). Eigenvector signs are made deterministic (largest-magnitude
    entry positive). ``dim`` fixes ``d`` instead (the ``ratio`` mode).
    """
    if count <= 0:
        raise ValueError("GradiVeQ: no samples to fit a basis to")
    mu = total / count
    cov = outer / count - torch.outer(mu, mu)
    cov = 0.5 * (cov + cov.t())
    vals, vecs = torch.linalg.eigh(cov)
    vals, vecs = vals.flip(0).clamp_min(0), vecs.flip(1)
    tot = float(vals.sum())
    if not tot > 0:
        d = 1
    else:
        share = torch.cumsum(vals, 0) / tot
        d = int((share < energy - 1e-12).sum()) + 1
        d = max(1, min(d, vals.numel()))
    if dim is not None:
        d = max(1, min(int(dim), vals.numel()))
    u = vecs[:, :d]
    pivot = u.abs().argmax(dim=0)
    signs = torch.sign(u[pivot, torch.arange(d)])
    u = u * torch.where(signs == 0, torch.ones_like(signs), signs)
    return u.to(torch.float32).contiguous(), mu.to(torch.float32), d, vals


def project(slices: torch.Tensor, basis: torch.Tensor, mean: torch.Tensor, world_size: int) -> torch.Tensor:
    """Compress one worker's ``S x K`` slices: ``g' = U_d^T (g - mu / N)`` per slice (``S x d``).
    Linear in ``g`` up to the constant: the sum over N workers is ``U_d^T (sum g - mu)``."""
    return (slices - mean / world_size) @ basis


def reconstruct(summed: torch.Tensor, basis: torch.Tensor, mean: torch.Tensor) -> torch.Tensor:
    """Decompress the allreduced sum once: ``U_d sum' + mu`` (``S x K``), the approximate sum of the
    workers' slices."""
    return summed @ basis.t() + mean


class GradiVeQ(GradiVeQFormat, Codec):
    """GradiVeQ: per-layer PCA of gradient slices; compressed slices sum inside a ring allreduce.

    **Layout.** A conv kernel ``F x C x kh x kw`` is laid out so the values at the same position
    across all ``F`` filters are adjacent, and cut into ``S`` slices of ``K = F * D`` values (``D``
    positions each; see :func:`slice_geometry`): ``K`` is at most ``slice_size`` (and at least
    ``F``), and small enough that one sampling phase yields ``samples_per_dim * K`` slices.

    **Compression.** ``g' = U_d^T (g - mu/N)`` per slice, ``U_d`` the top-``d`` eigenvectors
    (``K x d``) of the covariance of sampled *aggregated* slices, ``mu`` their mean. One basis per
    layer, shared by all its slices. Linear, so one ``allreduce(Sum)`` of the ``S x d`` matrices
    gives ``U_d^T (sum g - mu)``; each worker decompresses once: ``U_d * sum' + mu`` (then divides
    by N for the average). ``d`` is the smallest with (top-``d`` eigenvalue share) ``>= energy``;
    the compression ratio of a layer is ``K/d``.

    **Schedule** (per tensor, from its exchange counter only, so every rank takes the same branch):
    ``warmup_steps`` uncompressed fp32 allreduces; then, repeating: ``sample_steps`` steps aggregated
    with ``sampler`` (4-bit QSGD, as in the paper) whose aggregated results are accumulated as PCA
    samples, the basis fitted at the last sampling step; then ``compress_steps`` GradiVeQ steps.
    Rank 0 fits the basis and broadcasts ``d``, ``U_d`` and ``mu`` (one small broadcast per cycle),
    so no rank depends on bit-identical eigen-solvers.

    Tensors that are not conv kernels (``dim < 3``: linear weights, biases) use ``fallback`` (a
    codec or a spec string, default 4-bit QSGD; ``"none"`` for fp32), with its own wire-stats row.

    State (``codec.state``, a :class:`~hvd_compress.core.state.GradiVeQState`, per tensor name, saved by ``state_dict()`` along with the fallback's and
    the sampler's): ``step``, ``phase``, ``basis`` (``U_d``), ``mean`` (``mu``), ``d``, ``K``,
    ``samples`` (``count``, ``sum``, ``outer``: the float64 moments of this cycle's samples),
    ``residual`` (with ``error_feedback``: this worker's projection residual, flat fp32).

    Example::

        import horovod.torch as hvd, hvd_compress.torch as hc
        hvd.init()
        codec = hc.GradiVeQ(warmup_steps=2500, sample_steps=100, compress_steps=400)
        opt = hvd.DistributedOptimizer(opt, named_parameters=model.named_parameters(),
                                       compression=codec)
        # short schedule for small jobs: hc.from_spec("gradiveq:warmup_steps=20,sample_steps=10,compress_steps=60")
        ...
        print(codec.compression_report())   # per layer: K, d, K/d

    How to tune: ``energy`` trades accuracy for ratio (0.99 gave K/d = 8 on ResNet-32 in the paper;
    0.95 compresses harder). On the CNNs we measured, the energy rule keeps ``d`` close to ``K``
    (K/d 1.1-1.5 at 99%; ``docs/linear.md``): to buy a known compression, set ``ratio`` (``d = K /
    ratio`` per layer, e.g. ``gradiveq:ratio=8``) and ``error_feedback=True``, which carries what
    the projection dropped into the worker's next gradient, so the dropped part is delayed rather
    than lost (each worker adds its own residual before projecting: still one summable allreduce). A basis fitted to fewer slices than about ``K`` captures the
    samples' energy but not the next step's gradient (measured on a small CNN with 10 sampling
    steps: K=256 from 180 slices left 40-70% of each compressed gradient out, K=96 from 480 slices
    10-25%); ``samples_per_dim`` (default 4) shrinks ``K`` until a cycle has enough slices, so raise
    ``sample_steps`` rather than lower it when you want longer slices.
    Keep the warm-up: early gradients change fast and a basis fitted on them ages quickly. Set
    ``sampler="none"`` to sample from exact fp32 aggregates (more bytes during sampling).
    """

    State = GradiVeQState

    def __init__(
        self,
        energy: float = 0.99,
        warmup_steps: int = 2500,
        sample_steps: int = 100,
        compress_steps: int = 400,
        slice_size: int = 256,
        samples_per_dim: float = 4.0,
        fallback: "Codec | str | None" = "qsgd:bits=4",
        sampler: "Codec | str | None" = "qsgd:bits=4",
        ratio: Optional[float] = None,
        error_feedback: bool = False,
        **options,
    ):
        super().__init__(
            energy,
            warmup_steps,
            sample_steps,
            compress_steps,
            slice_size,
            samples_per_dim,
            fallback,
            sampler,
            ratio,
            error_feedback,
            **options,
        )

    @staticmethod
    def build_codec(spec):
        """``hvd_compress.torch.from_spec(spec)``, for the fallback and sampler codecs."""
        return from_spec_with(spec)

    def compression_report(self) -> Dict[str, Dict[str, Any]]:
        """Per conv tensor with a fitted basis: ``K``, ``d``, ``ratio`` (``K/d``) and ``slices``;
        under ``"_total"`` the value-weighted ratio (values / compressed values)."""
        return compression_report_rows(
            {key: (self.state.K[key], d, self.state.slices[key]) for key, d in self.state.d.items()}
        )

    # ------------------------------------------------------------------ the exchange
    def custom_exchange(self, exchange, key, flat, shape=None):
        shape = tuple(shape) if shape is not None else (flat.numel(),)
        if not is_conv_kernel(shape):
            return self._fallback(exchange, key, flat, shape)
        return self._conv(exchange, key, flat, shape)

    def _fallback(self, exchange, key, flat, shape):
        sub = exchange.sub_exchange(self.fallback, self.fallback.describe())
        out = yield from sub.average(key, flat.view(shape))
        return out.reshape(-1)

    def _conv(self, exchange, key, flat, shape):
        comm = exchange.comm
        step = self.next_step(key)
        phase, pos = self.phase_at(step)
        self.state.phase[key] = phase
        n = flat.numel()
        flat = self._with_residual(key, flat)
        if phase == "warmup":
            out = yield from tracked_allreduce(exchange, flat, f"hvdc.{key}.gvq.full", "average", n)
            return out
        f, p, dpos, k, s = self.geometry(shape)
        if phase == "sample":
            sub = exchange.sub_exchange(self.sampler, exchange.label)
            out = (yield from sub.average(key, flat.view(shape), compress=True)).reshape(-1)
            samples = self.state.samples
            if pos == 0 or key not in samples or samples[key]["sum"].numel() != k:
                samples[key] = {
                    "count": 0,
                    "sum": torch.zeros(k, dtype=torch.float64),
                    "outer": torch.zeros(k, k, dtype=torch.float64),
                }
            if torch.isfinite(out).all():  # a non-finite step must not poison the basis
                agg = to_slices(out * comm.size, shape, k).to(torch.float64)  # the Sum
                acc = samples[key]
                acc["count"] += s
                acc["sum"] += agg.sum(dim=0)
                acc["outer"] += agg.t() @ agg
            if pos == self.sample_steps - 1:
                yield from self._fit(exchange, key, k, s)
            return out
        basis, mean = self.state.basis.get(key), self.state.mean.get(key)
        if basis is None or basis.shape[0] != k:
            raise RuntimeError(
                f"GradiVeQ: no basis for '{key}' in the compressed phase (state " "loaded from a different model?)"
            )
        slices = to_slices(flat, shape, k)
        compressed = project(slices, basis, mean, comm.size)
        if self.error_feedback:  # what this worker's projection drops: U U^T (g - mu/N) + mu/N kept
            own = from_slices(reconstruct(compressed, basis, mean / comm.size), shape)
            residual = flat - own  # reset where non-finite (never poisons later steps), no host sync
            self.state.residual[key] = torch.where(torch.isfinite(residual), residual, torch.zeros_like(residual))
        summed = yield from tracked_allreduce(exchange, compressed, f"hvdc.{key}.gvq.sum", "sum", n)
        return from_slices(reconstruct(summed, basis, mean), shape).div_(comm.size)

    def _with_residual(self, key, flat):
        """With ``error_feedback``: the gradient plus the residual the last compressed step left
        (consumed here; only a compressed step sets a new one)."""
        if not self.error_feedback:
            return flat
        residual = self.state.residual.pop(key, None)
        return flat if residual is None or residual.numel() != flat.numel() else flat + residual

    def _fit(self, exchange, key, k, s):
        """Rank 0 fits the basis on this cycle's samples and broadcasts ``d`` then ``[U_d, mu]``."""
        comm = exchange.comm
        acc = self.state.samples[key]
        fitted = None
        if comm.rank == 0:
            if acc["count"] > 0:
                fitted = fit_basis(acc["count"], acc["sum"], acc["outer"], self.energy, self.fixed_dim(k))
            else:  # every sample was non-finite: keep the old basis, or the identity
                old = self.state.basis.get(key)
                mu = self.state.mean.get(key)
                fitted = (old, mu, old.shape[1], None) if old is not None else (torch.eye(k), torch.zeros(k), k, None)
        header = torch.tensor([fitted[2] if fitted else 0], dtype=torch.int64)
        header = yield comm.broadcast_async(header, 0, name=f"hvdc.{key}.gvq.d")
        d = int(header[0])
        buf = torch.cat([fitted[0].reshape(-1), fitted[1]]) if fitted else torch.zeros(k * d + k)
        buf = yield comm.broadcast_async(buf.contiguous(), 0, name=f"hvdc.{key}.gvq.basis")
        nbytes = 8 + 4 * (k * d + k)
        exchange.stats.add(exchange.label, 0, nbytes, nbytes * (comm.size - 1) / max(comm.size, 1), tensors=0)
        self.state.basis[key] = buf[: k * d].reshape(k, d).clone()
        self.state.mean[key] = buf[k * d :].clone()
        self.state.d[key] = d
        self.state.K[key] = k
        self.state.slices[key] = s

    # ------------------------------------------------------------------ state
    def state_dict(self):
        sd = super().state_dict()
        sd["fallback"] = self.fallback.state_dict()
        sd["sampler"] = self.sampler.state_dict()
        return sd

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        if "fallback" in state_dict:
            self.fallback.load_state_dict(state_dict["fallback"])
        if "sampler" in state_dict:
            self.sampler.load_state_dict(state_dict["sampler"])
