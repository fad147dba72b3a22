"""Spec: the conformance table every torch codec passes (single process, pure codec math).

Multi-process behaviour (exchange patterns, replicas, wire bytes) is in test_horovod.py.
"""

import math

import pytest
import torch

import hvd_compress.torch as hc
from hvd_compress.torch.spec import registry

from codec_cases import NOMINAL, SPECS

# Multi-round codecs (PowerSGD, GradiVeQ; and Lattice, decoded against the receiver's own model) do not make one
# self-contained payload per tensor: their conformance is in test_linear_codecs.py and test_lattice.py.
LINEAR = [
    s
    for s in SPECS
    if type(hc.from_spec(s)).custom_exchange is not hc.Codec.custom_exchange
    or getattr(hc.from_spec(s), "needs_reference", False)
]
NON_SUMMABLE = [s for s in SPECS if not hc.from_spec(s).summable and s not in LINEAR]
FEEDBACK = ["onebit", "efsign", "topk:ratio=0.01"]


def encode(codec, x, seed=0, scale=None):
    gen = torch.Generator().manual_seed(seed)
    if codec.shared_scale and scale is None:
        scale = codec.local_scale(x)
    return codec.encode(x, gen, scale)


def test_every_registered_codec_is_in_the_table():
    assert {s.split(":")[0] for s in SPECS} == set(registry())


def test_every_registered_codec_builds_where_declared():
    """Both frameworks build every registered codec, except those codec_cases.NOT_IN lists (and
    those really are missing, so the list cannot go stale)."""
    from codec_cases import NOT_IN

    pytest.importorskip("tensorflow")
    import hvd_compress.tensorflow.spec as tf_spec

    builders = {"torch": registry, "tf": tf_spec.registry}
    for framework, names in builders.items():
        missing = set(registry()) - set(names())
        assert missing == set(NOT_IN.get(framework, {})), (framework, missing)


@pytest.mark.parametrize("spec", NON_SUMMABLE)
@pytest.mark.parametrize("numel", [1, 7, 40, 513, 5000])
def test_payload_size_and_decoded_shape(spec, numel):
    codec = hc.from_spec(spec)
    x = torch.randn(numel, generator=torch.Generator().manual_seed(numel))
    payload = encode(codec, x)
    assert payload.dtype == torch.uint8 and payload.dim() == 1
    assert payload.numel() == codec.payload_nbytes(numel)
    out = codec.decode(payload, numel)
    assert out.dtype == torch.float32 and out.shape == (numel,)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("spec,bits", sorted(NOMINAL.items()))
def test_nominal_bits_per_value(spec, bits):
    # 2**20 values: per-chunk scales are amortized; small tensors pay a few bits more.
    assert hc.from_spec(spec).nominal_bits(1 << 20) == pytest.approx(bits, rel=1e-3)


@pytest.mark.parametrize(
    "spec", ["qsgd:bits=2,bucket_size=128", "qsgd:bits=4", "qsgd:bits=8", "qsgd:bits=4,norm=l2", "terngrad:clip=none"]
)
def test_stochastic_codecs_are_unbiased(spec):
    codec = hc.from_spec(spec)
    x = torch.randn(1000, generator=torch.Generator().manual_seed(1)) * torch.linspace(0.01, 3, 1000)
    trials = 3000
    total = torch.zeros_like(x, dtype=torch.float64)
    scale = codec.local_scale(x) if codec.shared_scale else None
    for t in range(trials):
        total += codec.decode(encode(codec, x, seed=t, scale=scale), x.numel()).double()
    mean = (total / trials).float()
    # Each draw lands on one of two neighbouring levels one step apart, so a coordinate's standard
    # deviation is at most step/2; 6 standard errors bounds the max over 1000 coordinates.
    if codec.name == "qsgd":  # the largest bucket scale bounds every bucket's level step
        step = (x.abs().max() if codec.norm == "max" else x.norm()) / codec.levels
    else:
        step = x.abs().max()
    tol = 6 * (step / 2) / math.sqrt(trials)
    assert (mean - x).abs().max() <= tol


def test_terngrad_clipped_values_are_unbiased_for_the_clipped_gradient():
    codec = hc.TernGrad(clip=1.0)
    x = torch.randn(2000, generator=torch.Generator().manual_seed(2))
    s = codec.local_scale(x)
    assert float(s) == pytest.approx(min(float(x.abs().max()), float(x.std())), rel=1e-6)
    total = torch.zeros_like(x)
    for t in range(2000):
        total += codec.decode(encode(codec, x, seed=t, scale=s), x.numel())
    assert (total / 2000 - x.clamp(-float(s), float(s))).abs().max() <= 6 * float(s) / 2 / math.sqrt(2000)


@pytest.mark.parametrize("spec", FEEDBACK + ["doublesqueeze:codec=qsgd,bits=4"])
def test_error_feedback_identity_is_exact(spec):
    """residual_new == (g + residual_old) - C(g + residual_old), bit for bit, every step."""
    codec = hc.from_spec(spec)
    gen = torch.Generator().manual_seed(3)
    bounds = [(0, 3000), (3000, 5000)]
    feedback = codec if getattr(codec, "worker_feedback", False) else codec.inner
    draw = lambda chunk, phase: torch.Generator().manual_seed(chunk * 7 + phase)  # noqa: E731
    for step in range(4):
        g = torch.randn(5000, generator=gen)
        old = feedback.state.get("residual", {}).get("w", torch.zeros(5000)).clone()
        payloads = codec.worker_encode(g, "w", bounds, draw)
        decoded = torch.cat([codec.decode(p, b - a) for p, (a, b) in zip(payloads, bounds)])
        new = feedback.state["residual"]["w"]
        assert torch.equal(new, (g + old) - decoded)
        # and so nothing is lost, only delayed (fp32 rounding of one add and one subtract)
        torch.testing.assert_close(decoded + new, g + old, rtol=0, atol=1e-5)


def test_doublesqueeze_server_residual_identity_is_exact():
    codec = hc.DoubleSqueeze(hc.QSGD(bits=2, bucket_size=64))
    draw = lambda chunk, phase: torch.Generator().manual_seed(11 + phase)  # noqa: E731
    mean = torch.randn(640, generator=torch.Generator().manual_seed(4))
    for _ in range(3):
        old = codec.state.get("server_residual", {}).get("c", torch.zeros(640)).clone()
        payload = codec.server_encode(mean, "c", draw, owner=0)
        new = codec.state["server_residual"]["c"]
        assert torch.equal(new, (mean + old) - codec.decode(payload, 640))


def test_no_compression_round_trip_is_bit_exact():
    codec = hc.NoCompression()
    x = torch.randn(4097) * torch.logspace(-40, 30, 4097)  # subnormals to huge
    assert torch.equal(codec.decode(codec.encode(x), x.numel()), x)
    assert torch.equal(codec.from_summable(codec.to_summable(x)), x)


def test_fp16_round_trip_is_bit_exact_on_fp16_values():
    codec = hc.FP16()
    x = torch.randn(4097).mul(100).to(torch.float16).to(torch.float32)
    assert torch.equal(codec.decode(codec.encode(x), x.numel()), x)
    assert torch.equal(codec.from_summable(codec.to_summable(x)), x)


def test_bf16_round_trip_is_bit_exact_on_bf16_values():
    codec = hc.BF16()
    x = torch.randn(4097).mul(1e20).to(torch.bfloat16).to(torch.float32)
    assert torch.equal(codec.decode(codec.encode(x), x.numel()), x)


@pytest.mark.parametrize("spec", NON_SUMMABLE)
def test_zero_tensors_decode_to_exact_zeros(spec):
    codec = hc.from_spec(spec)
    x = torch.zeros(3000)
    out = codec.decode(encode(codec, x), 3000)
    assert torch.equal(out, x)
    assert torch.equal(codec.aggregate([encode(codec, x), encode(codec, x, seed=1)], 3000), x)


@pytest.mark.parametrize("spec", NON_SUMMABLE)
def test_empty_tensors(spec):
    codec = hc.from_spec(spec)
    payload = encode(codec, torch.zeros(0))
    assert payload.numel() == codec.payload_nbytes(0)
    assert codec.decode(payload, 0).shape == (0,)


@pytest.mark.parametrize("spec", NON_SUMMABLE)
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_input_never_decodes_to_finite_values(spec, bad):
    """A NaN/Inf must reach every rank as non-finite, so nothing wrong passes silently."""
    codec = hc.from_spec(spec)
    x = torch.randn(3000)
    x[1234] = bad
    out = codec.decode(encode(codec, x), 3000)
    assert not torch.isfinite(out).all()


def test_signsgd_aggregate_is_the_majority_vote():
    codec = hc.SignSGD(scaled=False)
    votes = [
        torch.tensor([1.0, 1.0, -1.0, -1.0, 1.0]),
        torch.tensor([1.0, -1.0, -1.0, 1.0, -2.0]),
        torch.tensor([-3.0, 1.0, -1.0, -1.0, -2.0]),
    ]
    payloads = [codec.encode(v) for v in votes]
    assert codec.aggregate(payloads, 5).tolist() == [1.0, 1.0, -1.0, -1.0, -1.0]


def test_topk_keeps_the_largest_values_and_sums_exactly():
    codec = hc.TopKSparsifier(ratio=0.25)
    a = torch.tensor([0.0, 5.0, 0.0, -7.0, 1.0, 0.0, 0.0, 0.0])
    b = torch.tensor([9.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 3.0])
    assert codec.decode(codec.encode(a), 8).tolist() == [0.0, 5.0, 0.0, -7.0, 0.0, 0.0, 0.0, 0.0]
    assert codec.aggregate([codec.encode(a), codec.encode(b)], 8).tolist() == [4.5, 2.5, 0, -3.5, 0, 0, 0, 1.5]


def test_qsgd_levels_and_layout():
    codec = hc.QSGD(bits=4, bucket_size=8)
    x = torch.tensor([7.0, -7.0, 0.0, 1.0, -1.0, 3.0, 2.0, 5.0])  # max 7 -> every value is on the grid
    payload = codec.encode(x)
    # code = level + 7: [14, 0, 7, 8, 6, 10, 9, 12], two per byte, first in the low nibble
    assert payload[:4].tolist() == [14 | 0 << 4, 7 | 8 << 4, 6 | 10 << 4, 9 | 12 << 4]
    assert payload[4:].view(torch.float32).tolist() == [7.0]
    assert torch.equal(codec.decode(payload, 8), x)


def test_spec_strings_build_every_codec_and_bad_ones_say_what_exists():
    for spec in SPECS:
        assert isinstance(hc.from_spec(spec), hc.Codec)
    assert hc.from_spec("doublesqueeze:codec=qsgd,bits=2,min_numel=10").inner.inner.bits == 2
    with pytest.raises(ValueError, match="available: .*qsgd.*terngrad"):
        hc.from_spec("qsdg:bits=4")
    with pytest.raises(ValueError, match="does not take"):
        hc.from_spec("qsgd:bitz=4")
    with pytest.raises(ValueError, match="bits must be 2, 4 or 8"):
        hc.from_spec("qsgd:bits=3")
    with pytest.raises(ValueError, match="exchange must be one of"):
        hc.from_spec("onebit:exchange=ring")


def test_codec_state_round_trips_and_refuses_another_codec():
    codec = hc.OneBit()
    draw = lambda c, p: None  # noqa: E731
    codec.worker_encode(torch.randn(4096), "layer.weight", [(0, 4096)], draw)
    codec.next_step("layer.weight")
    saved = codec.state_dict()
    fresh = hc.OneBit()
    fresh.load_state_dict(saved)
    assert torch.equal(fresh.state["residual"]["layer.weight"], codec.state["residual"]["layer.weight"])
    assert fresh.state["step"] == {"layer.weight": 1}
    with pytest.raises(ValueError, match="cannot load"):
        hc.OneBit(bucket_size=512).load_state_dict(saved)


@pytest.mark.parametrize("spec", ["qsgd:bits=4", "onebit", "terngrad"])
def test_should_compress_skips_small_1d_and_integer_tensors(spec):
    codec = hc.from_spec(spec)
    assert codec.should_compress(torch.zeros(64, 64))
    assert not codec.should_compress(torch.zeros(4096))  # 1-D
    assert not codec.should_compress(torch.zeros(10, 10))  # below min_numel
    assert not codec.should_compress(torch.zeros(64, 64, dtype=torch.int64))
    assert hc.from_spec(spec + ("," if ":" in spec else ":") + "compress_1d=true").should_compress(torch.zeros(4096))
