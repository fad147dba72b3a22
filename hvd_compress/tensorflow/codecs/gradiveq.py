"""GradiVeQ (Yu et al., NeurIPS 2018) in TensorFlow: PCA vector quantization whose payloads sum in
a ring allreduce.

The same algorithm, knobs, defaults and spec string
(``gradiveq:warmup_steps=20,sample_steps=10,compress_steps=60``) as ``hvd_compress.torch.GradiVeQ``;
the configuration (validation, schedule, slice geometry, fallback and sampler codecs) is shared
(:class:`hvd_compress.common.GradiVeQFormat`), the linear algebra is TF ops. The phase is chosen
with ``tf.switch_case`` on the tensor's step counter, so the codec runs eagerly and inside
``tf.function`` (``model.fit``, Horovod's ``DistributedGradientTape``) alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Sequence, Tuple

import numpy as np
import tensorflow as tf

from hvd_compress.common import GRADIVEQ_PHASES, GradiVeQFormat, compression_report_rows, op_name
from hvd_compress.core.state import GradiVeQBasisState
from hvd_compress.tensorflow.codecs.base import Codec
from hvd_compress.tensorflow.codecs.catalog import from_spec_with
from hvd_compress.tensorflow.codecs.powersgd import tracked_allreduce


@dataclass(eq=False)
class GradiVeQVariables(GradiVeQBasisState):
    """TF GradiVeQ's state: the basis state, with this cycle's sample moments as three variable
    groups (``sample_count``, ``sample_sum``, ``sample_outer``) where torch keeps one dict per
    tensor (:class:`~hvd_compress.core.state.GradiVeQState`): a ``tf.Variable`` holds one tensor."""

    sample_count: Dict[str, Any] = field(default_factory=dict)
    sample_sum: Dict[str, Any] = field(default_factory=dict)
    sample_outer: Dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- layout
def is_conv_kernel(shape: Sequence[int]) -> bool:
    """Conv kernels (``k... x C x F``: Conv1D/2D/3D kernels, filters last) are what GradiVeQ compresses."""
    return len(shape) >= 3


def slice_perm(ndim: int):
    """Axes of a TF conv kernel ``(spatial..., C, F)`` in slice order ``(C, spatial..., F)``:
    positions enumerated as torch enumerates them in ``F x C x k...``, filters fastest."""
    return [ndim - 2] + list(range(ndim - 2)) + [ndim - 1]


def to_slices(flat: tf.Tensor, shape: Sequence[int], k: int) -> tf.Tensor:
    """The paper's layout for a TF kernel (``HWIO``): the values at the same position across all
    ``F`` filters adjacent (``F`` is the last axis, so they already are in memory), positions
    ``(c, i, j)`` in torch's order, cut into slices of ``K = k`` values: an ``S x K`` matrix equal
    to torch's ``to_slices`` of the same kernel in ``OIHW``. One transpose ``(2, 0, 1, 3)``."""
    shape = [int(s) for s in shape]
    if k % shape[-1]:
        raise ValueError(f"slice length {k} is not a multiple of the {shape[-1]} filters")
    return tf.reshape(tf.transpose(tf.reshape(flat, shape), slice_perm(len(shape))), [-1, k])


def from_slices(slices: tf.Tensor, shape: Sequence[int]) -> tf.Tensor:
    """Inverse of :func:`to_slices`: back to the flat tensor in ``shape``'s (TF) memory order."""
    shape = [int(s) for s in shape]
    perm = slice_perm(len(shape))
    permuted = tf.reshape(slices, [shape[i] for i in perm])
    return tf.reshape(tf.transpose(permuted, np.argsort(perm).tolist()), [-1])


# ---------------------------------------------------------------------------- pure math
def fit_basis(count, total, outer, energy: float, dim=None):
    """PCA of sampled slices from their moments: ``count`` slices, ``total`` = their sum (K),
    ``outer`` = the sum of their outer products (K x K), float64 (as torch's ``fit_basis``).

    Returns ``(U, mu, d, eigenvalues)``: all ``K`` eigenvectors of the slice covariance as columns,
    by descending eigenvalue (K x K, fp32; ``U[:, :d]`` is ``U_d``), the mean slice ``mu`` (K,
    fp32), the smallest ``d`` (int32 tensor) whose top-``d`` eigenvalues hold at least ``energy``
    of the total variance (at least 1), and the eigenvalues, descending (float64). Eigenvector
    signs are made deterministic (largest-magnitude entry positive). ``dim`` (a Python int) fixes
    ``d`` instead (the ``ratio`` mode)."""
    count = tf.cast(count, tf.float64)
    mu = total / count
    cov = outer / count - mu[:, None] * mu[None, :]
    cov = 0.5 * (cov + tf.transpose(cov))
    vals, vecs = tf.linalg.eigh(cov)
    vals, vecs = tf.maximum(tf.reverse(vals, [0]), 0.0), tf.reverse(vecs, [1])
    k = int(outer.shape[0])
    tot = tf.reduce_sum(vals)
    share = tf.cumsum(vals) / tf.where(tot > 0, tot, tf.ones_like(tot))
    d = tf.cast(tf.reduce_sum(tf.cast(share < energy - 1e-12, tf.int32)), tf.int32) + 1
    d = tf.where(tot > 0, tf.clip_by_value(d, 1, k), 1)
    if dim is not None:
        d = tf.constant(max(1, min(int(dim), k)), tf.int32)
    pivot = tf.argmax(tf.abs(vecs), axis=0)
    signs = tf.sign(tf.reduce_sum(vecs * tf.one_hot(pivot, k, axis=0, dtype=vecs.dtype), axis=0))
    u = vecs * tf.where(signs == 0, tf.ones_like(signs), signs)[None, :]
    return tf.cast(u, tf.float32), tf.cast(mu, tf.float32), d, vals


def project(slices: tf.Tensor, basis: tf.Tensor, mean: tf.Tensor, world_size: int) -> tf.Tensor:
    """Compress one worker's ``S x K`` slices: ``g' = U_d^T (g - mu / N)`` per slice (``S x d``).
    Linear in ``g`` up to the constant: the sum over N workers is ``U_d^T (sum g - mu)``."""
    return tf.matmul(slices - mean / float(world_size), basis)


def reconstruct(summed: tf.Tensor, basis: tf.Tensor, mean: tf.Tensor) -> tf.Tensor:
    """Decompress the allreduced sum once: ``U_d sum' + mu`` (``S x K``)."""
    return tf.matmul(summed, basis, transpose_b=True) + mean


class GradiVeQ(GradiVeQFormat, Codec):
    """GradiVeQ: per-layer PCA of gradient slices; compressed slices sum inside a ring allreduce.

    The algorithm of ``hvd_compress.torch.GradiVeQ`` (see its docstring and ``docs/linear.md``):
    warm-up fp32 allreduces, then cycles of ``sample_steps`` steps aggregated with ``sampler``
    (4-bit QSGD) feeding a per-layer PCA, whose basis rank 0 fits and broadcasts (``d``, then
    ``[U_d, mu]``), and ``compress_steps`` steps sending ``U_d^T (g - mu/N)`` per slice through one
    ``allreduce(Sum)``, decompressed once after. Tensors that are not conv kernels use ``fallback``.

    **TF layout.** Keras conv kernels are ``HWIO`` (``kh x kw x C x F``, filters last), so the
    values at the same position across all ``F`` filters are already adjacent in memory. Slices
    take ``D`` consecutive positions of all filters, positions enumerated ``(c, i, j)`` as torch
    enumerates them in ``OIHW`` (one transpose, :func:`to_slices`): the slices of a TF kernel are
    exactly torch's slices of the same kernel, so ``K``, ``D``, ``S``, the fitted basis and the
    reconstruction agree between the frameworks (``tests/test_tf_linear.py``). Kernels whose filter
    axis is not last (``Conv2DTranspose``: ``kh x kw x F x C``) are sliced as if it were.

    State (``tf.Variable``\\ s in ``codec.state``, named ``hvd_compress/<group>/<tensor>``, saved by
    ``tf.train.Checkpoint(compression=codec)`` or through the optimizer that holds the codec, along
    with the fallback's and the sampler's): ``step`` (int64), ``phase`` (0 warm-up, 1 sampling,
    2 compressed; :meth:`phases`), ``basis`` (K x K fp32: ``U_d`` in its first ``d`` columns),
    ``mean`` (``mu``), ``d`` (int32, 0 before the first fit), ``K``, ``slices``, and this cycle's
    float64 sample moments ``sample_count``, ``sample_sum``, ``sample_outer``.

    Example::

        import horovod.tensorflow as hvd, hvd_compress.tensorflow as hct
        hvd.init()
        codec = hct.GradiVeQ(warmup_steps=2500, sample_steps=100, compress_steps=400)
        tape = hvd.DistributedGradientTape(tape, compression=codec)
        # or hvd_compress.tensorflow.frontends.keras.DistributedOptimizer(opt, compression=codec) + model.fit
        # short schedule for small jobs: "gradiveq:warmup_steps=20,sample_steps=10,compress_steps=60"
        ...
        print(codec.compression_report())   # per conv layer: K, d, K/d

    How to tune: as in torch (``energy`` trades accuracy for ratio; keep the warm-up; raise
    ``sample_steps`` rather than lower ``samples_per_dim`` for longer slices).
    """

    filters_axis = -1
    State = GradiVeQVariables

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
        ratio: "float | None" = None,
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
        """``hvd_compress.tensorflow.from_spec(spec)``, for the fallback and sampler codecs."""
        return from_spec_with(spec)

    # ------------------------------------------------------------------ reports
    def compression_report(self) -> Dict[str, Dict[str, Any]]:
        """Per conv tensor with a fitted basis: ``K``, ``d``, ``ratio`` (``K/d``) and ``slices``;
        under ``"_total"`` the value-weighted ratio. Call it outside ``tf.function``."""
        layers = {}
        for key, d in self.state.d.items():
            d = int(d.numpy())
            if d > 0:
                layers[key] = (int(self.state.K[key].numpy()), d, int(self.state.slices[key].numpy()))
        return compression_report_rows(layers)

    def phases(self) -> Dict[str, str]:
        """The phase of each conv tensor's latest exchange: ``warmup``, ``sample`` or ``compress``."""
        return {key: GRADIVEQ_PHASES[int(v.numpy())] for key, v in self.state.phase.items()}

    # ------------------------------------------------------------------ state
    def _variables(self, key: str, shape) -> Tuple[int, int, Dict[str, tf.Variable]]:
        f, p, dpos, k, s = self.geometry(shape)
        sv = self.state_variable
        return (
            k,
            s,
            {
                "phase": sv("phase", key, [], tf.int32),
                "basis": sv("basis", key, [k, k]),
                "mean": sv("mean", key, [k]),
                "d": sv("d", key, [], tf.int32),
                "K": sv("K", key, [], tf.int32, initial=lambda: tf.constant(k)),
                "slices": sv("slices", key, [], tf.int32, initial=lambda: tf.constant(s)),
                "count": sv("sample_count", key, [], tf.int64),
                "sum": sv("sample_sum", key, [k], tf.float64),
                "outer": sv("sample_outer", key, [k, k], tf.float64),
                **({"residual": sv("residual", key, [k * s])} if self.error_feedback else {}),
            },
        )

    def initial_state(self, group, key, var):
        if group in ("K", "slices"):  # the tensor's geometry: set when created, never changed
            return var.read_value()
        return super().initial_state(group, key, var)

    def build_custom_state(self, exchange, key, shape, dtype) -> bool:
        shape = tuple(int(s) for s in shape)
        if not is_conv_kernel(shape):
            exchange.sub_exchange(self.fallback, self.fallback.describe()).build_state(key, shape, dtype)
            return True
        self.state_variable("step", key, [], tf.int64)
        self._variables(key, shape)
        exchange.sub_exchange(self.sampler, exchange.label).build_state(key, shape, dtype)
        return True

    # ------------------------------------------------------------------ the exchange
    def custom_exchange(self, exchange, key, flat, shape):
        shape = tuple(int(s) for s in shape)
        if not is_conv_kernel(shape):
            sub = exchange.sub_exchange(self.fallback, self.fallback.describe())
            return tf.reshape(sub.average(key, tf.reshape(flat, shape), check=False), [-1])
        k, s, v = self._variables(key, shape)
        step = self.next_step(key)
        warm, cycle = self.warmup_steps, self.sample_steps + self.compress_steps
        c = tf.math.floormod(step - warm, cycle)
        phase = tf.where(step < warm, 0, tf.where(c < self.sample_steps, 1, 2))
        phase = tf.cast(phase, tf.int32)
        n = int(flat.shape.num_elements())
        if self.error_feedback:  # the residual the last compressed step left; only that phase sets one
            flat = flat + v["residual"].read_value()
        with tf.control_dependencies([v["phase"].assign(phase)]):
            return tf.switch_case(
                phase,
                [
                    lambda: self._flushed(v, tracked_allreduce(exchange, flat, op_name(key, "gvq_full"), "average", n)),
                    lambda: self._flushed(v, self._sample(exchange, key, flat, shape, k, s, v, c)),
                    lambda: self._compress(exchange, key, flat, shape, k, v),
                ],
            )

    def _flushed(self, v, out):
        """With ``error_feedback``, a warm-up or sampling step delivered the residual: clear it."""
        if not self.error_feedback:
            return out
        with tf.control_dependencies([out]):
            clear = v["residual"].assign(tf.zeros_like(v["residual"]))
        with tf.control_dependencies([clear]):
            return tf.identity(out)

    def _sample(self, exchange, key, flat, shape, k, s, v, pos):
        size = exchange.comm.size
        sub = exchange.sub_exchange(self.sampler, exchange.label)
        out = tf.reshape(sub.average(key, tf.reshape(flat, shape), compress=True, check=False), [-1])
        agg = tf.cast(to_slices(out * float(size), shape, k), tf.float64)  # the Sum
        finite = tf.reduce_all(tf.math.is_finite(out))  # a non-finite step must not poison the basis
        reset = tf.equal(pos, 0)
        count = tf.where(reset, tf.constant(0, tf.int64), v["count"].read_value())
        total = tf.where(reset, tf.zeros([k], tf.float64), v["sum"].read_value())
        outer = tf.where(reset, tf.zeros([k, k], tf.float64), v["outer"].read_value())
        count += tf.where(finite, tf.constant(s, tf.int64), 0)
        total += tf.where(finite, tf.reduce_sum(agg, 0), tf.zeros([k], tf.float64))
        outer += tf.where(finite, tf.matmul(agg, agg, transpose_a=True), tf.zeros([k, k], tf.float64))
        updates = [v["count"].assign(count), v["sum"].assign(total), v["outer"].assign(outer)]
        with tf.control_dependencies(updates):
            fitted = tf.cond(
                tf.equal(pos, self.sample_steps - 1),
                lambda: self._fit(exchange, key, k, v, count, total, outer),
                lambda: tf.constant(0, tf.int32),
            )
        with tf.control_dependencies([fitted]):
            return tf.identity(out)

    def _fit(self, exchange, key, k, v, count, total, outer):
        """Rank 0 fits the basis on this cycle's samples and broadcasts ``d`` then ``[U_d, mu]``."""
        comm = exchange.comm
        if comm.rank == 0:

            def keep():  # every sample was non-finite: keep the old basis, or the identity
                old = v["d"].read_value() > 0
                return (
                    tf.where(old, v["basis"].read_value(), tf.eye(k)),
                    tf.where(old, v["mean"].read_value(), tf.zeros([k])),
                    tf.where(old, v["d"].read_value(), k),
                )

            u, mu, d = tf.cond(
                count > 0, lambda: fit_basis(count, total, outer, self.energy, self.fixed_dim(k))[:3], keep
            )
            header = tf.reshape(tf.cast(d, tf.int64), [1])
        else:  # (ignored by the broadcast; not a constant, which TF's shape inference would try
            # to evaluate at trace time, running the broadcast on this rank alone: a hang)
            header = tf.reshape(tf.cast(v["d"].read_value(), tf.int64), [1])
        d = tf.cast(comm.broadcast(header, 0, op_name(key, "gvq_d"))[0], tf.int32)
        if comm.rank == 0:
            buf = tf.concat([tf.reshape(u[:, :d], [-1]), mu], 0)
        else:
            buf = tf.zeros(tf.reshape(k * d + k, [1]), tf.float32)
        buf = comm.broadcast(buf, 0, op_name(key, "gvq_basis"))
        basis = tf.pad(tf.reshape(buf[: k * d], [k, d]), [[0, 0], [0, k - d]])
        nbytes = 8.0 + 4.0 * tf.cast(k * d + k, tf.float64)
        updates = [
            v["basis"].assign(tf.ensure_shape(basis, [k, k])),
            v["mean"].assign(buf[k * d :]),
            v["d"].assign(d),
            exchange.stats.add(exchange.label, 0, nbytes, nbytes * (comm.size - 1) / max(comm.size, 1), tensors=0),
        ]
        with tf.control_dependencies(updates):
            return tf.identity(d)

    def _compress(self, exchange, key, flat, shape, k, v):
        size = exchange.comm.size
        d = v["d"].read_value()
        check = tf.debugging.assert_positive(
            d,
            message=f"GradiVeQ: no basis for '{key}' in the compressed phase (state loaded from a " "different model?)",
        )
        with tf.control_dependencies([check]):
            basis = v["basis"].read_value()[:, :d]
        mean = v["mean"].read_value()
        compressed = project(to_slices(flat, shape, k), basis, mean, size)
        updates = []
        if self.error_feedback:  # what this worker's projection drops, carried to its next step
            residual = flat - from_slices(reconstruct(compressed, basis, mean / float(size)), shape)
            residual = tf.where(tf.math.is_finite(residual), residual, tf.zeros_like(residual))
            updates.append(v["residual"].assign(residual))
        summed = tracked_allreduce(exchange, compressed, op_name(key, "gvq_sum"), "sum", int(flat.shape.num_elements()))
        with tf.control_dependencies(updates):
            return from_slices(reconstruct(summed, basis, mean), shape) / float(size)
