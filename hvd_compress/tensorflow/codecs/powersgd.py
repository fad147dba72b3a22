"""PowerSGD (Vogels, Karimireddy, Jaggi, NeurIPS 2019) in TensorFlow: rank-r power iteration with
warm start and error feedback, over Horovod's allreduce.

The same algorithm, knobs, defaults and spec string (``powersgd:rank=2,start_iter=10``) as
``hvd_compress.torch.PowerSGD``; the configuration is shared (:class:`hvd_compress.common.PowerSGDFormat`),
the linear algebra is TF ops that trace inside ``tf.function``.
"""

from __future__ import annotations

import math
import zlib
from typing import List, Sequence, Tuple

import numpy as np
import tensorflow as tf

from hvd_compress.common import PowerSGDFormat, op_name, ring_allreduce_bytes
from hvd_compress.core.state import PowerSGDState
from hvd_compress.tensorflow.codecs.base import Codec


# ---------------------------------------------------------------------------- layout
def matrix_perm(ndim: int) -> List[int]:
    """Axes of a TF kernel in torch's order: filters / output units (TF's last axis) first, then
    input channels (TF's second to last), then the spatial axes: ``HWIO -> OIHW``, a Dense kernel
    ``(in, out) -> (out, in)``. Identity for 0-D and 1-D tensors."""
    if ndim < 2:
        return list(range(ndim))
    return [ndim - 1, ndim - 2] + list(range(ndim - 2))


def matrix_shape(shape: Sequence[int]) -> Tuple[int, int]:
    """How PowerSGD views a TF tensor: ``n x m``, ``n`` its last axis (filters, output units), ``m``
    the rest: the same matrix as torch views the same layer's weight (``F x C*kh*kw`` for a conv
    kernel, ``out x in`` for a dense one). 1-D tensors are ``1 x n``."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return 1, shape[0]
    n = shape[-1]
    return n, (math.prod(shape) // n if n else 0)


def to_matrix(flat: tf.Tensor, shape: Sequence[int]) -> tf.Tensor:
    """The ``n x m`` matrix of :func:`matrix_shape`, values in torch's memory order."""
    n, m = matrix_shape(shape)
    shape = [int(s) for s in shape]
    if len(shape) < 2:
        return tf.reshape(flat, [n, m])
    return tf.reshape(tf.transpose(tf.reshape(flat, shape), matrix_perm(len(shape))), [n, m])


def from_matrix(mat: tf.Tensor, shape: Sequence[int]) -> tf.Tensor:
    """Inverse of :func:`to_matrix`: the flat tensor in ``shape``'s (TF) memory order."""
    shape = [int(s) for s in shape]
    if len(shape) < 2:
        return tf.reshape(mat, [-1])
    perm = matrix_perm(len(shape))
    permuted = tf.reshape(mat, [shape[i] for i in perm])
    return tf.reshape(tf.transpose(permuted, np.argsort(perm).tolist()), [-1])


# ---------------------------------------------------------------------------- pure math
def orthogonalize(m: tf.Tensor, epsilon: float = 0.0) -> tf.Tensor:
    """Orthonormal columns from ``m`` (rows x r), as torch's :func:`orthogonalize_`: Gram-Schmidt
    for rank <= 2 (``col /= ||col|| + epsilon``, later columns lose their projection on it; an
    exactly zero column stays zero when ``epsilon == 0``), ``tf.linalg.qr`` above."""
    r = int(m.shape[1])
    if r > 2:
        return tf.linalg.qr(m)[0]
    cols = [m[:, j : j + 1] for j in range(r)]
    for i in range(r):
        col = cols[i]
        norm = tf.norm(col)
        if epsilon == 0:
            col = tf.where(norm > 0, col / tf.where(norm > 0, norm, tf.ones_like(norm)), tf.zeros_like(col))
        else:
            col = col / (norm + epsilon)
        cols[i] = col
        for j in range(i + 1, r):
            cols[j] = cols[j] - tf.reduce_sum(col * cols[j]) * col
    return tf.concat(cols, 1) if r > 1 else cols[0]


def initial_q(seed: int, key: str, m: int, r: int) -> tf.Tensor:
    """The random start of Q for tensor ``key`` (``m x r``): the same on every worker (a stateless
    normal draw seeded by the codec seed and the tensor name, never the rank), so the first
    ``P = M Q`` sums across workers. (Not torch's draw: the two frameworks' generators differ.)"""
    return tf.random.stateless_normal([m, r], seed=tf.constant([int(seed), zlib.crc32(key.encode())], tf.int64))


# ---------------------------------------------------------------------------- helpers
def tracked_allreduce(exchange, t: tf.Tensor, name: str, op: str, values: int, label=None) -> tf.Tensor:
    """One allreduce through ``exchange.comm``, its bytes recorded in ``exchange.stats``
    (``values`` compressed values are credited to it; 0 for side traffic such as a second round).
    ``t`` may have a size known only at run time (GradiVeQ's ``S x d``)."""
    out = exchange.comm.allreduce(t, name, op=op)
    numel = t.shape.num_elements()
    nbytes = 4 * numel if numel is not None else tf.cast(tf.size(t), tf.float64) * 4.0
    exchange.stats.add(
        label or exchange.label,
        values,
        nbytes,
        ring_allreduce_bytes(1, exchange.comm.size) * nbytes,
        tensors=1 if values else 0,
    )
    return out


class PowerSGD(PowerSGDFormat, Codec):
    """Rank-``rank`` PowerSGD with warm start and error feedback, per matrix-shaped tensor.

    Each step, for a gradient viewed as an ``n x m`` matrix (:func:`matrix_shape`: ``n`` the last
    axis of a TF kernel, the filters / output units; conv kernels ``HWIO`` as ``O x I*H*W`` in
    torch's order, so the matrix is the one torch's PowerSGD sees for the same layer), every worker
    does::

        M = grad + e                       # error feedback (e: this worker's residual)
        Q = orthogonalize(Q_prev)          # warm start; first time: normal draw seeded by seed + name
        P = allreduce_sum(M @ Q)           # n x r floats on the wire
        P = orthogonalize(P)
        Q = allreduce_mean(M.T @ P)        # m x r floats on the wire
        M_hat = P @ Q.T                    # the same on every worker: the averaged gradient
        e = M - M_hat                      # kept for the next step

    Before ``start_iter`` exchanges of a tensor (a ``tf.cond`` on its step counter, so this traces
    in ``tf.function``), and for tensors where ``(n + m) * rank * min_compression_rate >= n * m``,
    the gradient goes through a plain fp32 allreduce (counted under this codec's label).

    State (``tf.Variable``\\ s in ``codec.state``, named ``hvd_compress/<group>/<tensor>``, saved by
    ``tf.train.Checkpoint``): ``step`` (exchanges, int64), ``q`` (the warm-start Q, ``m x r``,
    created holding the initial draw), ``residual`` (``e``, flat fp32 in the matrix's order, which
    is torch's memory order of the same layer).

    Example::

        import horovod.tensorflow as hvd, hvd_compress.tensorflow as hct
        hvd.init()
        tape = hvd.DistributedGradientTape(tape, compression=hct.PowerSGD(rank=2, start_iter=10))
        # or hct.from_spec("powersgd:rank=2,start_iter=10"), GradientReducer, or
        # hvd_compress.tensorflow.frontends.keras.DistributedOptimizer(opt, compression="powersgd:rank=2")

    How to tune: as torch's guide says, start with ``rank=1`` and double it until accuracy is
    where you want it (1-4 is typical); ``start_iter`` defers compression past the first, fragile
    iterations; ``min_compression_rate`` skips matrices where the factors would save little.
    """

    State = PowerSGDState
    matrix_shape = staticmethod(matrix_shape)

    def __init__(
        self,
        rank: int = 1,
        start_iter: int = 1000,
        min_compression_rate: float = 2.0,
        error_feedback: bool = True,
        warm_start: bool = True,
        orthogonalization_epsilon: float = 0.0,
        **options,
    ):
        super().__init__(
            rank, start_iter, min_compression_rate, error_feedback, warm_start, orthogonalization_epsilon, **options
        )

    # ------------------------------------------------------------------ state
    def _q_variable(self, key, m, r) -> tf.Variable:
        return self.state_variable("q", key, [m, r], initial=lambda: initial_q(self.seed, key, m, r))

    def initial_state(self, group, key, var):
        if group == "q":
            m, r = (int(d) for d in var.shape)
            return initial_q(self.seed, key, m, r)
        return super().initial_state(group, key, var)

    def build_custom_state(self, exchange, key, shape, dtype) -> bool:
        shape = tuple(int(s) for s in shape)
        self.state_variable("step", key, [], tf.int64)
        if self.worth_compressing(shape):
            n, m = matrix_shape(shape)
            if self.warm_start:
                self._q_variable(key, m, self.effective_rank(shape))
            if self.error_feedback:
                self.state_variable("residual", key, [n * m])
        return True

    # ------------------------------------------------------------------ the exchange
    def custom_exchange(self, exchange, key, flat, shape):
        shape = tuple(int(s) for s in shape)
        step = self.next_step(key)
        numel = int(flat.shape.num_elements())

        def full():
            return tracked_allreduce(exchange, flat, op_name(key, "psgd_full"), "average", numel)

        if not self.worth_compressing(shape):
            return full()
        if self.start_iter == 0:
            return self._compressed(exchange, key, flat, shape)
        return tf.cond(step < self.start_iter, full, lambda: self._compressed(exchange, key, flat, shape))

    def _compressed(self, exchange, key, flat, shape):
        n, m = matrix_shape(shape)
        r = self.effective_rank(shape)
        eps = self.orthogonalization_epsilon
        mat = to_matrix(flat, shape)
        if self.error_feedback:
            residual = self.state_variable("residual", key, [n * m])
            mat = mat + tf.reshape(residual.read_value(), [n, m])
        if self.warm_start:
            q_var = self._q_variable(key, m, r)
            q_prev = q_var.read_value()
        else:
            q_prev = initial_q(self.seed, key, m, r)
        q = orthogonalize(q_prev, eps)
        p = tracked_allreduce(exchange, tf.matmul(mat, q), op_name(key, "psgd_p"), "sum", 0)
        p = orthogonalize(p, eps)
        q = tracked_allreduce(exchange, tf.matmul(mat, p, transpose_a=True), op_name(key, "psgd_q"), "average", n * m)
        approx = tf.matmul(p, q, transpose_b=True)
        # as in torch: p has orthonormal columns, so approx is finite when q is; check the factors
        finite = tf.logical_and(tf.reduce_all(tf.math.is_finite(q)), tf.reduce_all(tf.math.is_finite(p)))
        updates = []
        if self.warm_start:  # a non-finite step keeps the previous Q
            updates.append(q_var.assign(tf.where(finite, q, q_prev)))
        if self.error_feedback:  # ... and resets the residual, never poisons it
            updates.append(residual.assign(tf.where(finite, tf.reshape(mat - approx, [-1]), tf.zeros([n * m]))))
        with tf.control_dependencies(updates):
            return from_matrix(approx, shape)
