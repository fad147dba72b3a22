"""GradiVeQ (Yu et al., NeurIPS 2018) as a numpy reference of its whole exchange.

Not a payload format: a per-tensor schedule of phases (warm-up, sampling, compressed), a basis
fitted by rank 0 and broadcast, and compressed slices summed in one allreduce.
:meth:`GradiVeQ.reduce` takes every rank's gradient and the codec's state and simulates the step
all ranks take together; the algorithm, layout and tuning advice are in
``hvd_compress/torch/codecs/gradiveq.py`` (``shared/ALGORITHMS.md``), the torch codec this
matches within fp32 rounding (``tests/test_reducer_references.py``). Torch's layout: a kernel
``F x C x k...`` (filters first).

Per step of a conv kernel (3-D or more), with ``x_i = g_i + e_i`` (``e_i`` only with
``error_feedback``):

* ``warmup``: the fp32 mean (round ``"full"``).
* ``sample``: the sampler's average (with ``sampler="none"`` the fp32 mean, round ``"sum"``; any
  other sampler is a compressed exchange whose result the caller passes as ``aggregate``);
  its slices (times N: the sum) accumulate as float64 moments; at the cycle's last sampling step
  the basis is fitted (rounds ``"d"``, 8 bytes, and ``"basis"``, ``4 (K d + K)`` bytes: rank 0
  broadcasts).
* ``compress``: each rank sends ``U^T (slices_i - mu / N)`` (``S x d`` fp32, round ``"sum"``);
  every rank ends with ``(U sum + mu) / N``; ``e_i = x_i - (U U^T (slices_i - mu/N) + mu/N)``.

Tensors below 3-D go to ``fallback`` (``"none"``: the fp32 mean; other codecs: pass
``aggregate``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Dict, List, Optional, Sequence, Tuple

import numpy as np

from hvd_compress.codecs.reduction import Reduction, as_grads, rank_mean, rank_sum
from hvd_compress.common import GRADIVEQ_PHASES, filters_and_positions, slice_geometry_fp
from hvd_compress.core.registry import register_codec
from hvd_compress.core.spec import CodecSpec

PHASES = GRADIVEQ_PHASES


def to_slices(flat: np.ndarray, shape: Sequence[int], k: int) -> np.ndarray:
    """The ``S x K`` slices: the same position of all ``F`` filters side by side."""
    f = int(shape[0])
    return np.asarray(flat).reshape(f, -1).T.reshape(-1, k)


def from_slices(slices: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Inverse of :func:`to_slices`, flat in ``shape``'s memory order."""
    f = int(shape[0])
    return np.ascontiguousarray(np.asarray(slices).reshape(-1, f).T).reshape(-1)


def fit_basis(
    count: int, total: np.ndarray, outer: np.ndarray, energy: float, dim: Optional[int] = None
) -> Tuple[np.ndarray, np.ndarray, int, np.ndarray]:
    """PCA of ``count`` sampled slices from their float64 moments (``total``: their sum,
    ``outer``: the sum of their outer products): ``(U_d, mu, d, eigenvalues)``, ``U_d`` the top
    ``d`` eigenvectors (fp32, each with its largest-magnitude entry positive), ``d`` the smallest
    holding ``energy`` of the variance (or ``dim``), eigenvalues descending and clamped at 0."""
    if count <= 0:
        raise ValueError("GradiVeQ: no samples to fit a basis to")
    mu = total / count
    cov = outer / count - np.outer(mu, mu)
    cov = 0.5 * (cov + cov.T)
    vals, vecs = np.linalg.eigh(cov)
    vals, vecs = np.maximum(vals[::-1], 0.0), vecs[:, ::-1]
    tot = float(vals.sum())
    if not tot > 0:
        d = 1
    else:
        share = np.cumsum(vals) / tot
        d = int((share < energy - 1e-12).sum()) + 1
        d = max(1, min(d, vals.size))
    if dim is not None:
        d = max(1, min(int(dim), vals.size))
    u = vecs[:, :d]
    pivot = np.abs(u).argmax(axis=0)
    signs = np.sign(u[pivot, np.arange(d)])
    u = u * np.where(signs == 0, 1.0, signs)
    return np.ascontiguousarray(u, np.float32), mu.astype(np.float32), d, vals


@register_codec("gradiveq", builtin=True)
@dataclass(frozen=True)
class GradiVeQ(CodecSpec):
    """GradiVeQ: conv-kernel slices projected on a PCA basis fitted from sampled gradients, the
    ``d`` coefficients per slice summed by one allreduce (the whole schedule: module docstring).

    State (a dict, one tensor's): ``step``, ``phase``, ``basis`` (``K x d`` fp32), ``mean``
    (``K``), ``d``, ``K``, ``slices``, ``samples`` (``count``, ``sum``, ``outer``: float64),
    ``residual`` (with ``error_feedback``: a list of each rank's flat fp32 residual, or absent).

    Args: as the torch codec's; ``fallback`` and ``sampler`` are spec strings.
    """

    bits_note: ClassVar[str] = "4.06 (QSGD-4) in warm-up and sampling, then 32 d / `slice_size` (d fitted to `energy`)"

    energy: float = 0.99
    warmup_steps: int = 2500
    sample_steps: int = 100
    compress_steps: int = 400
    slice_size: int = 256
    samples_per_dim: float = 4.0
    fallback: str = "qsgd:bits=4"
    sampler: str = "qsgd:bits=4"
    ratio: Optional[float] = None
    error_feedback: bool = False

    stochastic = False

    def __post_init__(self):
        if not 0 < self.energy <= 1:
            raise ValueError(f"energy must be in (0, 1], got {self.energy}")
        if self.ratio is not None and not (isinstance(self.ratio, (int, float)) and self.ratio >= 1):
            raise ValueError(f"ratio must be None (the energy rule) or a number >= 1, got {self.ratio!r}")
        if not isinstance(self.error_feedback, bool):
            raise ValueError(f"error_feedback must be True or False, got {self.error_feedback!r}")
        for name, low in (("warmup_steps", 0), ("sample_steps", 1), ("compress_steps", 0), ("slice_size", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value}")
        if not self.samples_per_dim >= 0:
            raise ValueError(f"samples_per_dim must be >= 0, got {self.samples_per_dim}")
        object.__setattr__(self, "fallback", "none" if self.fallback is None else str(self.fallback))
        object.__setattr__(self, "sampler", "none" if self.sampler is None else str(self.sampler))
        object.__setattr__(self, "energy", float(self.energy))
        object.__setattr__(self, "samples_per_dim", float(self.samples_per_dim))
        object.__setattr__(self, "ratio", None if self.ratio is None else float(self.ratio))

    # ------------------------------------------------------------------ schedule and geometry
    def phase_at(self, step: int) -> Tuple[str, int]:
        """``(phase, position within the phase)`` of exchange number ``step`` of a tensor."""
        if step < self.warmup_steps:
            return "warmup", step
        c = (step - self.warmup_steps) % (self.sample_steps + self.compress_steps)
        if c < self.sample_steps:
            return "sample", c
        return "compress", c - self.sample_steps

    def geometry(self, shape) -> Tuple[int, int, int, int, int]:
        """``(F, P, D, K, S)`` of a kernel of ``shape`` (filters first)."""
        f, p = filters_and_positions(shape, 0)
        return slice_geometry_fp(f, p, self.slice_size, self.sample_steps, self.samples_per_dim)

    def fixed_dim(self, k: int) -> Optional[int]:
        return None if self.ratio is None else max(1, min(k, int(k / self.ratio)))

    def payload_nbytes(self, numel):
        return 4 * numel  # depends on the fitted d

    def encode(self, x, rng=None, *, noise=None):
        raise ValueError(
            "GradiVeQ has no single-payload format: simulate the exchange with reduce(grads, state, shape)"
        )

    def decode(self, payload, numel):
        raise ValueError(
            "GradiVeQ has no single-payload format: simulate the exchange with reduce(grads, state, shape)"
        )

    # ------------------------------------------------------------------ the exchange
    def reduce(
        self,
        grads: Sequence[np.ndarray],
        state: Optional[Dict[str, Any]] = None,
        shape: Optional[Sequence[int]] = None,
        *,
        aggregate: Optional[Callable[[List[np.ndarray]], Tuple[np.ndarray, List[Tuple[str, List[int]]]]]] = None,
    ) -> Reduction:
        """One step of every rank on one tensor (``grads`` by rank, ``shape`` torch's, default
        the first gradient's; ``state`` as the last call returned). ``aggregate(xs)`` returns
        ``(average, rounds)`` of the sampler's (sample phase) or the fallback's (tensors below
        3-D) exchange of the ranks' values ``xs``; needed unless that codec is ``"none"``."""
        shape = tuple(np.shape(grads[0]) if shape is None else shape)
        xs = as_grads(grads)
        size, numel = len(xs), xs[0].size
        state = dict(state or {})

        def fp32_mean(values: List[np.ndarray], what: str):
            if aggregate is not None:
                return aggregate(values)
            if what != "none":
                raise ValueError(f"GradiVeQ.reduce: pass aggregate= for the {what!r} exchange")
            return rank_mean(values), [("sum", [4 * numel] * size)]

        if len(shape) < 3:  # not a conv kernel: the fallback codec's exchange
            out, rounds = fp32_mean(xs, self.fallback)
            return Reduction(out, state, rounds)
        step = int(state.get("step", 0))
        state["step"] = step + 1
        phase, pos = self.phase_at(step)
        state["phase"] = phase
        if self.error_feedback:
            residuals = state.pop("residual", None)
            if residuals is not None:
                xs = [x + e if e.size == numel else x for x, e in zip(xs, residuals)]
        if phase == "warmup":
            return Reduction(rank_mean(xs), state, [("full", [4 * numel] * size)])
        f, p, dpos, k, s = self.geometry(shape)
        if phase == "sample":
            out, rounds = fp32_mean(xs, self.sampler)
            samples = state.get("samples")
            if pos == 0 or samples is None or samples["sum"].size != k:
                samples = {"count": 0, "sum": np.zeros(k), "outer": np.zeros((k, k))}
            else:
                samples = dict(samples)
            if np.isfinite(out).all():  # a non-finite step must not poison the basis
                agg = to_slices(out * np.float32(size), shape, k).astype(np.float64)  # the Sum
                samples["count"] += s
                samples["sum"] = samples["sum"] + agg.sum(axis=0)
                samples["outer"] = samples["outer"] + agg.T @ agg
            state["samples"] = samples
            if pos == self.sample_steps - 1:
                rounds = rounds + self._fit(state, k, s, size)
            return Reduction(out, state, rounds)
        if state.get("basis") is None or state["basis"].shape[0] != k:
            raise RuntimeError("GradiVeQ: no basis for this tensor in the compressed phase")
        basis: np.ndarray = state["basis"]
        mean: np.ndarray = state["mean"]
        compressed = [(to_slices(x, shape, k) - mean / np.float32(size)) @ basis for x in xs]
        if self.error_feedback:  # what each rank's projection drops
            residuals = []
            for x, c in zip(xs, compressed):
                e = x - from_slices(c @ basis.T + mean / np.float32(size), shape)
                residuals.append(np.where(np.isfinite(e), e, np.float32(0)).astype(np.float32))
            state["residual"] = residuals
        summed = rank_sum(compressed)
        out = (from_slices(summed @ basis.T + mean, shape) / np.float32(size)).astype(np.float32)
        return Reduction(out, state, [("sum", [4 * c.size for c in compressed])])

    def _fit(self, state: Dict[str, Any], k: int, s: int, size: int) -> List[Tuple[str, List[int]]]:
        """Rank 0's fit of this cycle's samples, as every rank receives it (d, then U_d and mu)."""
        acc = state["samples"]
        if acc["count"] > 0:
            basis, mu, d, _ = fit_basis(acc["count"], acc["sum"], acc["outer"], self.energy, self.fixed_dim(k))
        elif state.get("basis") is not None:  # every sample was non-finite: keep the old basis
            basis, mu, d = state["basis"], state["mean"], state["basis"].shape[1]
        else:
            basis, mu, d = np.eye(k, dtype=np.float32), np.zeros(k, np.float32), k
        state.update(basis=basis, mean=mu, d=d, K=k, slices=s)
        return [("d", [8] * size), ("basis", [4 * (k * d + k)] * size)]
