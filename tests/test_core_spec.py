"""Spec: a codec defined once as a numpy CodecSpec (examples/custom_codec.py) is registered by name,
checked by hvd_compress.testing, and runs in torch and TF through the reference backend; a broken
codec fails on the first call with a ValueError naming it and the expected size."""

import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

import hvd_compress
import hvd_compress.torch as hc
from hvd_compress.core import unregister_codec
from hvd_compress.testing import ConformanceError, check_codec

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import custom_codec
from local_comm import run_workers, run_workers_tf

from hvd_compress.torch.exchange import Exchange, WireStats, drive

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def throwaway():
    """Register test-only codecs; unregistered afterwards."""
    names = []

    def register(name, cls):
        names.append(name)
        if "__dataclass_fields__" not in cls.__dict__:
            cls = dataclass(frozen=True)(cls)
        return hvd_compress.register_codec(name)(cls)

    yield register
    for name in names:
        unregister_codec(name)


@dataclass(frozen=True)
class Bytes(hvd_compress.CodecSpec):
    """A deliberately broken codec: encode returns ``extra`` bytes too many, as ``dtype``."""

    extra: int = 0
    dtype: str = "uint8"
    shrink: int = 0
    stochastic = False

    def payload_nbytes(self, numel):
        return 4 * numel

    def encode(self, x, rng, *, noise=None):
        return np.concatenate([x.view(np.uint8), np.zeros(self.extra, np.uint8)]).astype(self.dtype)

    def decode(self, payload, numel):
        return payload.view(np.float32)[: numel - self.shrink]


# ---------------------------------------------------------------------- registry
def test_the_example_is_registered_and_its_spec_string_builds_it_back():
    assert hvd_compress.registry()["twobit"] is custom_codec.TwoBit
    spec = hvd_compress.reference("twobit:bucket_size=64")
    assert spec == custom_codec.TwoBit(bucket_size=64)
    assert spec.fingerprint() == "twobit(bucket_size=64)" and spec.spec_string() == "twobit:bucket_size=64"
    assert hvd_compress.reference(spec.spec_string()) == spec
    assert spec.payload_nbytes(1000) == 250 + 4 * 16 and spec.nominal_bits(1024) == pytest.approx(2.5)


def test_duplicate_and_builtin_names_are_refused(throwaway):
    throwaway("dup_codec", type("A", (hvd_compress.CodecSpec,), {}))
    with pytest.raises(ValueError, match="already registered"):
        hvd_compress.register_codec("dup_codec")(dataclass(frozen=True)(type("B", (hvd_compress.CodecSpec,), {})))
    with pytest.raises(ValueError, match="built-in"):
        hvd_compress.register_codec("qsgd")
    with pytest.raises(ValueError, match="must match"):
        hvd_compress.register_codec("My Codec")
    with pytest.raises(TypeError, match="frozen dataclass"):
        hvd_compress.register_codec("plain")(type("C", (hvd_compress.CodecSpec,), {}))


def test_builtin_names_are_exactly_the_specs_of_hvd_compress_codecs():
    """``BUILTIN_NAMES`` (the names a user may not register) is derived: the names registered with
    ``builtin=True``, by the modules of ``hvd_compress/codecs/``; the torch codecs found by
    discovery must claim exactly these (``hvd_compress.torch.codecs.catalog``; TensorFlow:
    tests/test_codecs.py with ``NOT_IN``)."""
    from hvd_compress.core.registry import BUILTIN_NAMES, builtin_names
    from hvd_compress.torch.spec import registry as torch_registry

    by_reference = {
        n for n, cls in hvd_compress.registry().items() if cls.__module__.startswith("hvd_compress.codecs.")
    }
    assert by_reference == BUILTIN_NAMES == builtin_names() == hvd_compress.core.BUILTIN_NAMES
    assert {"qsgd", "none", "lattice", "doublesqueeze"} <= BUILTIN_NAMES
    assert set(torch_registry()) == BUILTIN_NAMES


def test_builtin_names_are_refused_before_the_builtin_specs_are_imported():
    """A fresh interpreter: importing the registry imports no spec; registering a built-in name
    imports them and refuses it; a free name registers."""
    code = textwrap.dedent(
        """
        import sys
        import hvd_compress.core.registry
        registry = sys.modules["hvd_compress.core.registry"]  # hvd_compress.core.registry: the function
        assert "hvd_compress.codecs" not in sys.modules
        try:
            registry.register_codec("terngrad")
        except ValueError as exc:
            assert "built-in" in str(exc), exc
        else:
            raise AssertionError("a built-in name was registered")
        assert "hvd_compress.codecs" in sys.modules
        registry.register_codec("my_own")
        print(sorted(registry.BUILTIN_NAMES))
        """
    )
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "'qsgd'" in done.stdout and "'my_own'" not in done.stdout


def test_unknown_knobs_and_names_list_what_exists():
    with pytest.raises(ValueError, match=r"twobit does not take \['bits'\]; its knobs are \['bucket_size'\]"):
        hvd_compress.reference("twobit:bits=2")
    with pytest.raises(ValueError, match=r"does not take \['bits'\]"):
        hc.from_spec("twobit:bits=2")
    with pytest.raises(ValueError, match="registered: .*twobit"):
        hvd_compress.reference("nosuchcodec")
    with pytest.raises(ValueError, match="available: .*twobit"):
        hc.from_spec("nosuchcodec")
    with pytest.raises(ValueError, match="positive multiple of 4"):
        hc.from_spec("twobit:bucket_size=6")


# ---------------------------------------------------------------------- conformance
def test_check_codec_passes_the_example_and_catches_a_nondeterministic_codec(throwaway):
    report = check_codec("twobit:bucket_size=64", frameworks=("torch",))
    assert report["frameworks"] == ["torch"] and report["nominal_bits"] > 2

    class Flaky(hvd_compress.CodecSpec):
        def payload_nbytes(self, numel):
            return numel

        def encode(self, x, rng, *, noise=None):  # ignores rng: a fresh stream every call
            return np.random.default_rng().integers(0, 2, x.size).astype(np.uint8)

        def decode(self, payload, numel):
            return payload.astype(np.float32)

    throwaway("flaky", Flaky)
    with pytest.raises(ConformanceError, match="two encodes with rng seed"):
        check_codec("flaky", numels=(100,), frameworks=())


@pytest.mark.parametrize(
    "knobs, message",
    [
        (
            "extra=1",
            r"encode of 256 values returned 1025 bytes; expected a 1-D uint8 array of payload_nbytes\(256\) = 1024 bytes",
        ),
        ("dtype=int8", "encode of 256 values returned dtype int8"),
        ("shrink=1", r"decode of 1024 bytes returned shape \(255,\); expected a float32 array of shape \(256,\)"),
    ],
)
def test_a_broken_codec_fails_on_the_first_call_naming_itself_and_the_expected_size(throwaway, knobs, message):
    throwaway("broken", Bytes)
    codec = hc.from_spec(f"broken:{knobs}")
    with pytest.raises(ValueError, match=rf"codec broken\(.*\): {message}"):
        codec.decode(codec.encode(torch.randn(256)), 256)
    with pytest.raises(ConformanceError, match=message):
        check_codec(f"broken:{knobs}", numels=(256,), frameworks=())


def test_payloads_of_the_wrong_size_never_reach_the_codec():
    codec = hc.from_spec("twobit")
    payload = codec.encode(torch.randn(1000))
    with pytest.raises(
        ValueError,
        match=r"twobit\(bucket_size=256\) payload for 1000 values: it has 265 bytes, "
        "expected a 1-D uint8 tensor of 266 bytes",
    ):
        codec.decode(payload[:-1], 1000)


# ---------------------------------------------------------------------- torch exchanges
def _exchange(codec_spec, size, steps=3, numel=3000):
    """Every rank averages ``steps`` gradients through ``codec_spec``; results, stats and payload RNG."""

    def work(comm):
        codec = hc.from_spec(codec_spec) if isinstance(codec_spec, str) else codec_spec()
        ex = Exchange(codec, comm, stats=WireStats())
        outs = []
        for t in range(steps):
            g = torch.randn(numel, generator=torch.Generator().manual_seed(100 * comm.rank + t))
            outs.append(drive({"w": ex.average("w", g.view(30, -1), compress=True)})["w"])
        return torch.stack(outs), ex.stats.snapshot()[codec.describe()], codec

    return run_workers(size, work)


@pytest.mark.parametrize(
    "spec, size",
    [
        ("twobit:min_numel=0", 2),
        ("twobit:exchange=reduce_scatter,bucket_size=64", 3),
        ("doublesqueeze:codec=twobit,bucket_size=64", 3),
        (lambda: hc.ErrorFeedback(hc.from_spec("twobit")), 2),
    ],
)
def test_user_codec_averages_identically_on_every_rank_with_its_nominal_bytes(spec, size):
    runs = _exchange(spec, size)
    outs, stats, codec = runs[0]
    for other, _, _ in runs[1:]:
        assert torch.equal(outs, other)
    assert torch.equal(_exchange(spec, size)[0][0], outs), "same seed, same steps: same result"
    assert stats["bits_per_value"] == pytest.approx(codec.nominal_bits(3000 // size), rel=0.10)
    truth = torch.stack(
        [
            torch.stack(
                [torch.randn(3000, generator=torch.Generator().manual_seed(100 * r + t)) for r in range(size)]
            ).mean(0)
            for t in range(3)
        ]
    )
    cosine = torch.nn.functional.cosine_similarity(outs.reshape(-1), truth.reshape(-1), dim=0)
    assert cosine > 0.3  # a (noisy) estimate of the mean


# ---------------------------------------------------------------------- TensorFlow
def test_tensorflow_builds_the_same_codec_and_bytes_and_averages_it():
    tf = pytest.importorskip("tensorflow")
    import hvd_compress.tensorflow as hct
    from hvd_compress.tensorflow.exchange import Exchange as TFExchange
    from hvd_compress.tensorflow.stats import WireStats as TFWireStats

    spec = "doublesqueeze:codec=twobit,bucket_size=64"
    assert hct.from_spec(spec).fingerprint() == hc.from_spec(spec).fingerprint()
    tfc, thc = hct.from_spec("twobit:bucket_size=64"), hc.from_spec("twobit:bucket_size=64")
    x = np.random.default_rng(0).standard_normal(1000).astype(np.float32)
    u = np.random.default_rng(1).random(1000, dtype=np.float32)
    p_tf = tf.function(lambda v, w: tfc.encode(v, noise=w))(tf.constant(x), tf.constant(u)).numpy()
    p_th = thc.encode(torch.from_numpy(x), noise=torch.from_numpy(u)).numpy()
    assert p_tf.tobytes() == p_th.tobytes()
    assert np.array_equal(tfc.decode(tf.constant(p_tf), 1000).numpy(), thc.decode(torch.from_numpy(p_th), 1000).numpy())
    check_codec("twobit:bucket_size=64", numels=(0, 9, 1000), seeds=(0,), frameworks=("tensorflow",))

    def work(comm):
        codec = hct.from_spec(spec)
        ex = TFExchange(codec, comm, stats=TFWireStats())
        g = tf.constant(np.random.default_rng(comm.rank).standard_normal((30, 100)).astype(np.float32))
        return ex.average("w", g, compress=True).numpy()

    outs = run_workers_tf(3, work)
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


@pytest.mark.gpu
def test_cuda_tensors_round_trip_through_the_host_with_one_warning():
    codec = hc.from_spec("twobit")
    x = torch.randn(1000, device="cuda")
    with pytest.warns(UserWarning, match="reference-backend codec"):
        payload = codec.encode(x)
    assert payload.device.type == "cuda" and codec.decode(payload, 1000).device.type == "cuda"
