"""Spec: a malformed payload never decodes. Every built-in codec, on every decoding path (torch plain,
torch native kernels, TensorFlow), rejects a payload that is not a 1-D uint8 tensor of exactly
``payload_nbytes(numel)`` bytes with a ``ValueError`` naming the codec; random bytes of the right
length either raise ``ValueError`` or decode to exactly ``numel`` values (never another exception,
never a tensor of another size).

The fuzz runs ``HVD_COMPRESS_FUZZ_EXAMPLES`` cases per codec and path (200 in CI); for the full
10,000-case run::

    HVD_COMPRESS_FUZZ_EXAMPLES=10000 python -m pytest tests/test_malformed.py -k fuzz -q
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import hvd_compress.torch as hc
from hvd_compress import _native
from test_codecs import LINEAR
from test_codecs import SPECS as TORCH_ALL

# Multi-round codecs (PowerSGD, GradiVeQ) have no one-payload decode; Lattice decodes relative to a
# reference (its own malformed-payload checks are in test_lattice.py).
TORCH_SPECS = [s for s in TORCH_ALL if s not in LINEAR]
PATHS = ["plain", "native"]
NUMEL = 1000
FUZZ_EXAMPLES = int(os.environ.get("HVD_COMPRESS_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


def malformed(valid: torch.Tensor) -> dict:
    """The ways a payload can be wrong, from one valid payload."""
    return {
        "truncated": valid[: valid.numel() // 2],
        "one_byte_short": valid[:-1],
        "oversized": torch.cat([valid, valid[:1]]),
        "empty": valid[:0],
        "wrong_dtype": valid.view(torch.int8),
        "two_dimensional": valid.view(1, -1),
    }


def torch_payload(codec, n):
    x = torch.randn(n, generator=torch.Generator().manual_seed(n))
    scale = codec.local_scale(x) if codec.shared_scale else None
    return codec.encode(x, torch.Generator().manual_seed(0), scale)


def native_path(path):
    if path == "native" and _native.load() is None:
        pytest.skip(f"native kernels unavailable: {_native.unavailable_reason()}")
    return _native.forced(path == "native")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("spec", TORCH_SPECS)
def test_torch_decoders_reject_malformed_payloads_naming_the_codec(spec, path):
    codec = hc.from_spec(spec)
    valid = torch_payload(codec, NUMEL)
    assert valid.numel() == codec.payload_nbytes(NUMEL)
    with native_path(path):
        for what, bad in malformed(valid).items():
            decoders = {
                "decode": lambda p: codec.decode(p, NUMEL),
                "decode_into": lambda p: codec.decode_into(p, torch.empty(NUMEL)),
                "aggregate": lambda p: codec.aggregate([valid, p], NUMEL),
            }
            for name, run in decoders.items():
                with pytest.raises(ValueError, match="malformed") as err:
                    run(bad)
                assert codec.describe() in str(err.value), (what, name)


@pytest.mark.parametrize("path", PATHS)
def test_topk_rejects_indices_outside_the_tensor(path):
    codec = hc.from_spec("topk:ratio=0.01")
    payload = torch_payload(codec, NUMEL).clone()
    payload[:4] = torch.tensor([NUMEL], dtype=torch.int32).view(torch.uint8)  # first index == numel
    with native_path(path), pytest.raises(ValueError, match="outside"):
        codec.decode(payload, NUMEL)


def draw_numel_and_bytes(data, codec):
    """A value count and a payload for it: the right length half the time, any length otherwise."""
    n = data.draw(st.integers(0, 300), label="numel")
    expected = codec.payload_nbytes(n)
    size = data.draw(st.one_of(st.just(expected), st.integers(0, 2 * expected + 16)), label="size")
    return n, data.draw(st.binary(min_size=size, max_size=size), label="bytes")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("spec", TORCH_SPECS)
def test_fuzz_torch_random_bytes_raise_value_error_or_decode_to_numel_values(spec, path):
    codec = hc.from_spec(spec)

    @FUZZ
    @given(st.data())
    def check(data):
        n, raw = draw_numel_and_bytes(data, codec)
        payload = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
        for run in (lambda: codec.decode(payload, n), lambda: codec.aggregate([payload, payload], n)):
            try:
                out = run()
            except ValueError:
                continue
            assert out.shape == (n,) and out.dtype == torch.float32

    with native_path(path):
        check()


# ---------------------------------------------------------------------- TensorFlow
def tf_specs():
    try:
        import test_tf_codecs
    except Exception:  # TensorFlow missing: test_tf_codecs skips itself at import
        return []
    return test_tf_codecs.SPECS


def tf_codec(spec):
    tf = pytest.importorskip("tensorflow")
    import hvd_compress.tensorflow as hct

    return tf, hct.from_spec(spec)


@pytest.mark.parametrize("spec", tf_specs())
def test_tf_decoders_reject_malformed_payloads_naming_the_codec(spec):
    tf, codec = tf_codec(spec)
    from test_tf_codecs import encode

    valid = encode(codec, tf.random.stateless_normal([NUMEL], (1, 2)))
    assert int(valid.shape[0]) == codec.payload_nbytes(NUMEL)
    v = valid.numpy()
    bad = {
        "truncated": v[: len(v) // 2],
        "one_byte_short": v[:-1],
        "oversized": v.tolist() + [0],
        "empty": v[:0],
        "wrong_dtype": v.view("int8"),
        "two_dimensional": v.reshape(1, -1),
    }
    for what, b in bad.items():
        p = tf.constant(b, tf.int8) if what == "wrong_dtype" else tf.constant(b, tf.uint8)
        for name, run in {
            "decode": lambda: codec.decode(p, NUMEL),
            "aggregate": lambda: codec.aggregate([valid, p], NUMEL),
        }.items():
            with pytest.raises(ValueError, match="malformed") as err:
                run()
            assert codec.describe() in str(err.value), (what, name)


@pytest.mark.parametrize("spec", tf_specs())
def test_fuzz_tf_random_bytes_raise_value_error_or_decode_to_numel_values(spec):
    tf, codec = tf_codec(spec)

    @FUZZ
    @given(st.data())
    def check(data):
        n, raw = draw_numel_and_bytes(data, codec)
        payload = tf.constant(list(raw), tf.uint8, shape=[len(raw)])
        try:
            out = codec.decode(payload, n)
        except ValueError:
            return
        assert out.shape == (n,) and out.dtype == tf.float32

    check()


# ---------------------------------------------------------------------- parameter-server messages
@pytest.mark.parametrize("encoding", ["fp32", "quant", "sparse"])
def test_fuzz_ps_messages_raise_malformed_message_or_decode_to_n_finite_values(encoding):
    """The parameter server's wire format (hvd_compress.ps.wire): random and corrupted payloads."""
    import numpy as np

    from hvd_compress.ps import wire

    outcomes = {"rejected": 0, "decoded": 0}

    @FUZZ
    @given(st.data())
    def check(data):
        n = data.draw(st.integers(0, 300), label="n")
        bits = data.draw(st.integers(-1, 34), label="bits")
        rng = np.random.default_rng(data.draw(st.integers(0, 2**16), label="seed"))
        if 2 <= bits <= 16 and data.draw(st.booleans(), label="start from a valid payload"):
            v = rng.standard_normal(n).astype(np.float32)
            enc = {
                "fp32": lambda: wire.fp32(v),
                "quant": lambda: wire.quant(v, bits, rng),
                "sparse": lambda: wire.sparse(v, bits, max(1.0, n / 10), rng),
            }[encoding]()
            raw = bytearray(enc[2].tobytes())
            for _ in range(data.draw(st.integers(0, 4), label="flips")):  # corrupt a few bytes
                if raw:
                    raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
            cut = data.draw(st.integers(-3, 3), label="length change")
            raw = raw[: max(0, len(raw) + cut)] if cut < 0 else raw + bytes(cut)
        else:
            raw = data.draw(st.binary(max_size=4 * n + 16), label="bytes")
        m = wire.Message(
            kind="gradient",
            sender=0,
            epoch=0,
            encoding=encoding,
            bits=bits,
            n=n,
            payload=np.frombuffer(bytes(raw), np.uint8).copy(),
        )
        try:
            wire.check_header(m, wire.PUSHES, n)
            out = wire.decode(m)
        except wire.MalformedMessage:
            outcomes["rejected"] += 1
            return
        outcomes["decoded"] += 1
        assert out.shape == (n,) and out.dtype == np.float32 and np.isfinite(out).all()

    check()
    assert outcomes["rejected"] and outcomes["decoded"], outcomes  # both sides were exercised
