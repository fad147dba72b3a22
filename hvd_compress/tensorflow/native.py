"""The native C kernels (:mod:`hvd_compress._native`) behind the TensorFlow codecs.

QSGD, TernGrad, OneBit's quantizer and EFSign's scaled sign run their encode and decode in the
same fused kernels as the torch codecs, over the tensors' numpy buffers: eagerly by a direct call
(``Tensor.numpy()``), inside ``tf.function`` through ``tf.numpy_function`` (so DistributedGradientTape
and Keras graphs keep working; such a graph is not XLA-compilable or serializable to a SavedModel,
switch the path off for those). Payloads are the plain TF ops' bytes: codes identical for the same
input and uniforms, max-norm scales identical, sum-based scales (OneBit's means, EFSign's mean
|x|, QSGD's L2 norm) accumulated in double, so they may differ from TF's fp32 sums in the last
bit (as between torch's native and plain paths; the wire tests use order-free inputs).

The stochastic codecs keep TF's noise contract: with a stateless seed (what the exchange passes)
the kernel ``hvdc_tf_uniform`` draws exactly ``tf.random.stateless_uniform([n], seed)`` (Philox4x32-10
with TF's key/counter derivation); explicit ``noise`` is used as given; without either (stateful
``tf.random.uniform``) the codec keeps the plain TF path.

Off with ``HVD_COMPRESS_NATIVE=0`` (read when a codec call is traced or run eagerly), or
:func:`hvd_compress._native.forced`. Threads: ``HVD_COMPRESS_THREADS``, else ``OMP_NUM_THREADS``,
else 1 (TF's own inter-op threads already run tensors in parallel).
"""

from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

import numpy as np
import tensorflow as tf

from hvd_compress import _native

_MASK64 = (1 << 64) - 1


@tf.autograph.experimental.do_not_convert
def lib():
    """The loaded kernel library when the native path is on, else ``None``. Not converted by
    autograph: the first call may load (and build) the library while a ``tf.function`` traces."""
    return _native.load() if _native.enabled() else None


def threads() -> int:
    for var in ("HVD_COMPRESS_THREADS", "OMP_NUM_THREADS"):
        env = os.environ.get(var)
        if env:
            try:
                return max(1, int(env))
            except ValueError:
                raise ValueError(f"{var} must be a positive integer, got {env!r}") from None
    return 1


def check(rc: int, what: str) -> int:
    if rc == -3:
        raise ValueError(f"hvd_compress: corrupt {what} payload (a base-3 byte above 242)")
    if rc < 0:
        raise RuntimeError(f"hvd_compress native {what} kernel failed (code {rc})")
    return rc


def f32_array(a) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32).reshape(-1))


def tf_uniform(seed, n: int) -> np.ndarray:
    """``tf.random.stateless_uniform([n], seed=seed)`` computed by the kernels (bit-identical)."""
    s = np.asarray(seed).reshape(-1).astype(np.int64)
    out = empty(n, np.float32)
    _native.load().hvdc_tf_uniform(int(s[0]) & _MASK64, int(s[1]) & _MASK64, n, out.ctypes.data, threads())
    return out


def to_numpy(t: tf.Tensor) -> np.ndarray:
    """A view of an eager CPU tensor's buffer, no copy: ``EagerTensor.__array__`` shares the
    buffer (the kernels only read it; TF tensors are immutable). ``Tensor.numpy()`` copies (6 ms
    for 4M fp32 values, as long as a fast codec's whole encode), and numpy 2's ``np.from_dlpack``
    no longer takes TF's bare DLPack capsule, so neither is used here."""
    if t.device.endswith("CPU:0"):
        try:
            view = np.asarray(t).view()
            view.flags.writeable = False  # a write would change an immutable TF tensor
            return view
        except Exception:  # any refusal: take the copying path
            pass
    return t.numpy()


ALIGN = 64  # bytes: TF's CPU allocator alignment, required to wrap a numpy buffer without a copy


def empty(n: int, dtype) -> np.ndarray:
    """An uninitialised 1-D array of ``n`` ``dtype`` values whose buffer is :data:`ALIGN`-byte
    aligned, so :func:`to_tensor` hands it to TF without a copy (``np.empty`` of a large array is
    16-byte aligned)."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(n * itemsize + ALIGN, np.uint8)
    start = -raw.ctypes.data % ALIGN
    return raw[start : start + n * itemsize].view(dtype)


def to_tensor(a: np.ndarray) -> tf.Tensor:
    """``a`` as an eager tensor sharing its buffer (DLPack; the tensor keeps ``a`` alive) when it is
    64-byte aligned, as TF's allocator aligns (allocate with :func:`empty`); else a copy. The
    kernels' outputs are fresh arrays nobody else writes."""
    if a.ctypes.data % ALIGN == 0 and a.size:
        try:
            return tf.experimental.dlpack.from_dlpack(a.__dlpack__())
        except Exception:  # any refusal: copy
            pass
    return tf.convert_to_tensor(a)


def call(fn: Callable, inputs: Sequence[tf.Tensor], dtype, nelems: int) -> tf.Tensor:
    """``fn(*numpy_arrays)`` -> 1-D array of ``nelems`` ``dtype`` values, as a tensor: a direct call
    when executing eagerly, a ``tf.numpy_function`` node inside a graph (static shape set)."""
    if tf.executing_eagerly():
        return to_tensor(fn(*[to_numpy(t) for t in inputs]))
    out = tf.numpy_function(fn, list(inputs), dtype, stateful=False)
    out.set_shape([nelems])
    return out


def noise_input(n: int, seed, noise) -> Optional[tuple]:
    """``(tensor, is_seed)`` for a stochastic encoder, or ``None`` where the plain path must draw
    (no seed and no noise: TF's stateful generator)."""
    if noise is not None:
        return tf.reshape(tf.cast(noise, tf.float32), [n]), False
    if seed is not None:
        return tf.reshape(tf.cast(seed, tf.int64), [2]), True
    return None


def uniforms(arr: np.ndarray, is_seed: bool, n: int) -> np.ndarray:
    return tf_uniform(arr, n) if is_seed else f32_array(arr)
