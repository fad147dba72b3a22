"""Conformance checks for a codec spec: run the suite's codec checks on your own codec.

::

    import hvd_compress.testing
    import my_codecs  # registers "mycodec"
    report = hvd_compress.testing.check_codec("mycodec:bucket_size=128")

or in pytest, one line per codec: ``def test_mycodec(): check_codec("mycodec")``.

What is checked, for every size in ``numels`` (empty, odd, unaligned and multi-bucket by default):

* ``payload_nbytes`` is a non-negative int and ``encode`` returns exactly that many uint8 bytes,
  1-D; ``decode`` returns ``numel`` float32 values; ``encode`` leaves its input unchanged;
* determinism: the same rng seed gives the same payload, decode is a pure function; explicit
  ``noise=`` overrides the rng (when ``encode`` takes it);
* finite inputs decode to finite values;
* payloads one byte short or long, or of the wrong dtype, are rejected with ``ValueError``;
* the spec string and fingerprint round-trip through :func:`hvd_compress.reference`;
* the torch and TensorFlow reference adapters (where those frameworks import) produce the same
  bytes and values as the numpy reference for the same seeds, and reject bad payloads too.

A failure raises :class:`ConformanceError` saying which check, which size and what differed.
"""

from __future__ import annotations

import importlib.util
from typing import Any, Dict, Iterable, List, Optional, Union

import numpy as np

from hvd_compress.core import checks
from hvd_compress.core.registry import reference
from hvd_compress.core.spec import CodecSpec

DEFAULT_NUMELS = (0, 1, 7, 8, 9, 1000, 4097)


class ConformanceError(AssertionError):
    """A codec spec broke one of the conformance checks."""


def _expect(ok: bool, spec: CodecSpec, what: str) -> None:
    if not ok:
        raise ConformanceError(f"{spec.describe()}: {what}")


def _rejects(spec: CodecSpec, decode, payload, numel: int, what: str) -> None:
    try:
        decode(payload, numel)
    except ValueError:
        return
    raise ConformanceError(f"{spec.describe()}: decode accepted {what} for {numel} values")


def _check_numpy(spec: CodecSpec, x: np.ndarray, seed: int) -> np.ndarray:
    n = x.size
    before = x.copy()
    try:
        payload = checks.encode(spec, x, np.random.default_rng(seed))
        decoded = checks.decode(spec, payload, n)
    except ValueError as exc:
        raise ConformanceError(str(exc)) from exc
    _expect(np.array_equal(x, before), spec, f"encode changed its input ({n} values)")
    again = checks.encode(spec, x, np.random.default_rng(seed))
    _expect(np.array_equal(payload, again), spec, f"two encodes with rng seed {seed} differ ({n} values)")
    _expect(
        np.array_equal(decoded, checks.decode(spec, payload, n), equal_nan=True),
        spec,
        f"decode of the same payload differs between calls ({n} values)",
    )
    _expect(bool(np.isfinite(decoded).all()), spec, f"finite input of {n} values decoded to non-finite values")
    if checks.takes_noise(spec):
        noise = np.random.default_rng(seed + 1).random(n, dtype=np.float32)
        a = checks.encode(spec, x, np.random.default_rng(1), noise)
        b = checks.encode(spec, x, np.random.default_rng(2), noise)
        _expect(np.array_equal(a, b), spec, f"explicit noise= does not override the rng ({n} values)")
    decode = lambda p, m: checks.decode(spec, p, m)  # noqa: E731
    _rejects(spec, decode, payload[:-1] if payload.size else np.zeros(1, np.uint8), n, "a payload of the wrong size")
    _rejects(spec, decode, np.concatenate([payload, np.zeros(1, np.uint8)]), n, "a payload one byte long")
    _rejects(spec, decode, payload.astype(np.float32), n, "a float32 payload")
    return payload


def _check_torch(spec: CodecSpec, x: np.ndarray, seed: int, payload: np.ndarray) -> None:
    import torch

    from hvd_compress.torch.codecs.reference import ReferenceCodec

    codec = ReferenceCodec(spec)
    g = torch.Generator()
    g.manual_seed(seed)
    got = codec.encode(torch.from_numpy(x.copy()), g).numpy()
    want = checks.encode(spec, x, np.random.default_rng(g.initial_seed()))
    _expect(
        np.array_equal(got, want), spec, f"torch adapter's payload differs from the numpy reference ({x.size} values)"
    )
    out = codec.decode(torch.from_numpy(payload.copy()), x.size).numpy()
    _expect(
        np.array_equal(out, checks.decode(spec, payload, x.size), equal_nan=True),
        spec,
        f"torch adapter's decode differs from the numpy reference ({x.size} values)",
    )
    _rejects(
        spec, codec.decode, torch.zeros(payload.size + 1, dtype=torch.uint8), x.size, "(torch) a payload one byte long"
    )


def _check_tensorflow(spec: CodecSpec, x: np.ndarray, seed: int, payload: np.ndarray) -> None:
    import tensorflow as tf

    from hvd_compress.tensorflow.codecs.reference import ReferenceCodec, numpy_rng

    codec = ReferenceCodec(spec)
    stream = np.array([seed, 7], np.int64)
    got = codec.encode(tf.constant(x), tf.constant(stream)).numpy()
    want = checks.encode(spec, x, numpy_rng(stream))
    _expect(np.array_equal(got, want), spec, f"TF adapter's payload differs from the numpy reference ({x.size} values)")
    out = codec.decode(tf.constant(payload), x.size).numpy()
    _expect(
        np.array_equal(out, checks.decode(spec, payload, x.size), equal_nan=True),
        spec,
        f"TF adapter's decode differs from the numpy reference ({x.size} values)",
    )
    _rejects(spec, codec.decode, tf.zeros([payload.size + 1], tf.uint8), x.size, "(TF) a payload one byte long")


def _available(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def check_codec(
    spec_or_string: Union[str, CodecSpec],
    numels: Iterable[int] = DEFAULT_NUMELS,
    seeds: Iterable[int] = (0, 1),
    frameworks: Optional[Iterable[str]] = None,
) -> Dict[str, Any]:
    """Run the conformance checks on a codec spec (a registered name / spec string, or an instance).

    Args:
        spec_or_string: ``"mycodec:knob=1"`` (built with :func:`hvd_compress.reference`) or a
            :class:`~hvd_compress.CodecSpec` instance.
        numels: tensor sizes to try; include sizes that do not divide your bucket or byte widths.
        seeds: rng seeds for the inputs and the encoder's draws.
        frameworks: of ``("torch", "tensorflow")``; default: those that import here. Checking
            TensorFlow costs its import (seconds); pass ``("torch",)`` to skip it.

    Returns ``{"codec", "numels", "frameworks", "nominal_bits"}``; raises :class:`ConformanceError`.
    """
    spec = reference(spec_or_string)
    _expect(isinstance(spec, CodecSpec), spec, "is not a CodecSpec")
    _expect(spec.name != "", spec, "is not registered (use @hvd_compress.register_codec)")
    rebuilt = reference(spec.spec_string())
    _expect(
        rebuilt == spec and rebuilt.fingerprint() == spec.fingerprint(),
        spec,
        f"spec string {spec.spec_string()!r} builds {rebuilt.describe()}, not the same codec",
    )
    names = tuple(frameworks) if frameworks is not None else tuple(f for f in ("torch", "tensorflow") if _available(f))
    runners = {"torch": _check_torch, "tensorflow": _check_tensorflow}
    unknown = set(names) - set(runners)
    if unknown:
        raise ValueError(f"frameworks must be among {sorted(runners)}, got {sorted(unknown)}")
    sizes: List[int] = [int(n) for n in numels]
    for seed in seeds:
        for n in sizes:
            x = (np.random.default_rng([seed, n]).standard_normal(n) * 10.0 ** (seed % 3 - 1)).astype(np.float32)
            payload = _check_numpy(spec, x, seed)
            for name in names:
                runners[name](spec, x, seed, payload)
    return {
        "codec": spec.describe(),
        "numels": sizes,
        "frameworks": list(names),
        "nominal_bits": spec.nominal_bits(max(max(sizes, default=1), 1)),
    }
