"""Guards around a spec's numpy encode/decode: what every backend calls instead of the bare methods.

A user's codec can return the wrong number of bytes, the wrong dtype or the wrong number of
values; left alone that would reach another rank's decoder, or a collective sized by
``payload_nbytes``, and fail far away (or hang). These checks depend only on ``numel`` and the
knobs, so every rank raises the same ``ValueError`` on the same (first) call.
"""

from __future__ import annotations

import inspect
from typing import Optional

import numpy as np

from hvd_compress.common import check_payload
from hvd_compress.core.spec import CodecSpec


def expected_nbytes(spec: CodecSpec, numel: int) -> int:
    """``spec.payload_nbytes(numel)``, checked to be a non-negative integer."""
    nbytes = spec.payload_nbytes(int(numel))
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)) or nbytes < 0:
        raise ValueError(
            f"hvd_compress: codec {spec.describe()}: payload_nbytes({numel}) returned "
            f"{nbytes!r}; it must be a non-negative int"
        )
    return int(nbytes)


def takes_noise(spec: CodecSpec) -> bool:
    """Whether ``spec.encode`` accepts the ``noise=`` keyword (the base signature does)."""
    params = inspect.signature(spec.encode).parameters
    return "noise" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def encode(spec: CodecSpec, x: np.ndarray, rng: np.random.Generator, noise: Optional[np.ndarray] = None) -> np.ndarray:
    """``spec.encode(x, rng, noise=noise)`` on a contiguous 1-D float32 copy-free view of ``x``,
    its result checked: a 1-D uint8 array of exactly ``payload_nbytes(x.size)`` bytes."""
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32).reshape(-1))
    numel = x.size
    if noise is not None:
        noise = np.ascontiguousarray(np.asarray(noise, dtype=np.float32).reshape(-1))
        if noise.size != numel:
            raise ValueError(
                f"hvd_compress: codec {spec.describe()}: noise has {noise.size} values "
                f"for {numel} inputs; give one uniform per value"
            )
        payload = spec.encode(x, rng, noise=noise)
    else:
        payload = spec.encode(x, rng)
    expected = expected_nbytes(spec, numel)
    if not isinstance(payload, np.ndarray):
        problem = f"returned {type(payload).__name__}, not a numpy array"
    elif payload.dtype != np.uint8:
        problem = f"returned dtype {payload.dtype}"
    elif payload.ndim != 1:
        problem = f"returned an array of shape {payload.shape}"
    elif payload.size != expected:
        problem = f"returned {payload.size} bytes"
    else:
        return np.ascontiguousarray(payload)
    raise ValueError(
        f"hvd_compress: codec {spec.describe()}: encode of {numel} values {problem}; "
        f"expected a 1-D uint8 array of payload_nbytes({numel}) = {expected} bytes"
    )


def decode(spec: CodecSpec, payload: np.ndarray, numel: int) -> np.ndarray:
    """``spec.decode(payload, numel)`` with the payload checked first (1-D uint8 of
    ``payload_nbytes(numel)`` bytes: bytes from another rank never reach the codec unchecked)
    and the result checked after (``numel`` float32 values)."""
    numel = int(numel)
    payload = np.asarray(payload)
    check_payload(spec, numel, payload.size, payload.dtype == np.uint8, payload.ndim)  # type: ignore[arg-type]
    out = spec.decode(np.ascontiguousarray(payload), numel)
    if not isinstance(out, np.ndarray):
        problem = f"returned {type(out).__name__}, not a numpy array"
    elif out.dtype != np.float32:
        problem = f"returned dtype {out.dtype}"
    elif out.shape != (numel,):
        problem = f"returned shape {out.shape}"
    else:
        return out
    raise ValueError(
        f"hvd_compress: codec {spec.describe()}: decode of {payload.size} bytes {problem}; "
        f"expected a float32 array of shape ({numel},)"
    )
