"""Spec: the lattice quantizer (Davies et al.) decodes relative to the receiver's own vector.

* unbiased for nearby vectors, error at most one lattice step per value;
* error proportional to the distance between the two vectors (with eps chosen from it), not to
  their norm;
* too-far vectors are detected by the checksum, never decoded to silently wrong values;
* wire size: bits per value plus a 16-byte side channel.
"""

import math

import pytest
import torch

import hvd_compress.torch as hc
from hvd_compress.torch.codecs.lattice import SIDE_BYTES, Lattice, LatticeDecodeError


def gen(seed):
    return torch.Generator().manual_seed(seed)


def pair(n=4096, distance=1e-2, scale=1.0, seed=0):
    g = gen(seed)
    x = torch.randn(n, generator=g) * scale
    y = x + (torch.rand(n, generator=g) * 2 - 1) * distance
    return x, y


def test_spec_and_wire_size():
    c = hc.from_spec("lattice:bits=8")
    assert isinstance(c, Lattice) and c.bits == 8 and c.radius == 127
    assert c.payload_nbytes(1000) == 1000 + SIDE_BYTES
    assert hc.from_spec("lattice:bits=4").payload_nbytes(1000) == 500 + SIDE_BYTES
    assert c.nominal_bits(1 << 20) == pytest.approx(8.0, rel=1e-3)
    with pytest.raises(ValueError, match="bits must be 2, 4 or 8"):
        Lattice(bits=3)
    with pytest.raises(ValueError, match="eps"):
        Lattice(eps=-1.0)
    with pytest.raises(ValueError, match="unknown codec"):
        hc.from_spec("latice")


def test_decodes_within_one_step_for_nearby_vectors():
    c = Lattice(bits=8)
    for bits in (2, 4, 8):
        c = Lattice(bits=bits)
        x, y = pair(distance=1e-3, scale=10.0)  # large weights, close models
        eps = c.choose_eps(float((x - y).abs().max()), x)
        payload = c.encode(x, gen(1), eps)
        assert payload.numel() == c.payload_nbytes(x.numel())
        xh, ok = c.decode_relative(payload, y)
        assert ok, bits
        assert float((xh - x).abs().max()) <= eps * (1 + 1e-6) + 1e-5  # fp32 rounding of |x| ~ 40


def test_unbiased_for_nearby_vectors():
    c = Lattice(bits=8)
    x, y = pair(n=2000, distance=1e-2)
    eps = c.choose_eps(1e-2, x)
    trials = 400
    total = torch.zeros_like(x, dtype=torch.float64)
    for t in range(trials):
        xh, ok = c.decode_relative(c.encode(x, gen(100 + t), eps), y)
        assert ok
        total += (xh - x).double()
    mean_err = total / trials
    # each value's error has variance <= eps^2 / 4: its mean over 400 trials has sd <= eps / 40;
    # 5 sd per value (2000 values: a false alarm has probability ~1e-3), and the grand mean over
    # 800k draws is within 5 sd of zero (sd <= eps / 2 / sqrt(800k))
    assert float(mean_err.abs().max()) <= 5 * eps / 2 / math.sqrt(trials)
    assert abs(float(mean_err.mean())) <= 5 * eps / 2 / math.sqrt(trials * x.numel())


def test_error_scales_with_distance_not_norm():
    c = Lattice(bits=8)
    rms = {}
    for distance in (1e-3, 1e-2, 1e-1):
        for scale in (1.0, 10.0):  # steps eps >= 1.6e-5, well above fp32's spacing near |x| <= 40
            x, y = pair(n=20000, distance=distance, scale=scale, seed=3)
            eps = c.choose_eps(float((x - y).abs().max()), x)
            xh, ok = c.decode_relative(c.encode(x, gen(5), eps), y)
            assert ok
            rms[distance, scale] = float((xh - x).double().pow(2).mean().sqrt())
    for scale in (1.0, 10.0):
        # 10x the distance -> 10x the error (rms of randomized rounding ~ eps / sqrt(6) on average)
        assert rms[1e-2, scale] / rms[1e-3, scale] == pytest.approx(10, rel=0.15)
        assert rms[1e-1, scale] / rms[1e-2, scale] == pytest.approx(10, rel=0.15)
    for distance in (1e-3, 1e-2, 1e-1):  # 10x the norm, same distance -> same error
        assert rms[distance, 10.0] == pytest.approx(rms[distance, 1.0], rel=0.15)
    # and far below what a norm-relative 8-bit quantizer would give (max|x| / 127 / 2 per value)
    assert rms[1e-3, 1.0] < 0.1 * float(pair(n=20000, seed=3)[0].abs().max()) / 254


def test_too_far_is_detected_never_silently_wrong():
    c = Lattice(bits=8)
    x, y = pair(n=5000, distance=1e-3, seed=7)
    eps = c.choose_eps(1e-3, x)
    payload = c.encode(x, gen(8), eps)
    radius = c.max_distance(eps)
    # the whole model far away
    _, ok = c.decode_relative(payload, y + 3 * radius)
    assert not ok
    # a single coordinate just past the radius (q = 256 steps away from the truth)
    for i in (0, 1234, 4999):
        far = y.clone()
        far[i] = x[i] + 1.5 * radius
        _, ok = c.decode_relative(payload, far)
        assert not ok, i
    # random references at many distances: every decode is either flagged or correct
    g = gen(9)
    flagged = 0
    for t in range(200):
        d = float(torch.rand(1, generator=g)) * 4 * radius
        ref = x + (torch.rand(x.numel(), generator=g) * 2 - 1) * d
        xh, ok = c.decode_relative(payload, ref)
        if ok:
            assert float((xh - x).abs().max()) <= eps * 1.001
        else:
            flagged += 1
    assert flagged > 50  # most references beyond the radius were caught


def test_nonfinite_and_reference_free_use_are_clear():
    c = Lattice(bits=8)
    x = torch.ones(100)
    x[3] = float("nan")
    p = c.encode(x, gen(0), 1e-3)
    xh, ok = c.decode_relative(p, torch.ones(100))
    assert not ok and torch.isnan(xh).all() and not c.is_finite_payload(p, 100)
    with pytest.raises(LatticeDecodeError, match="relative to the receiver"):
        c.decode(p, 100)
    with pytest.raises(LatticeDecodeError, match="SwarmSGD"):
        c.compress(torch.ones(10))  # hvd.DistributedOptimizer(compression=Lattice())
    with pytest.raises(LatticeDecodeError, match="SwarmSGD"):
        c.worker_encode(torch.ones(10), "w", [(0, 10)], lambda i, j: None)  # allreduce-style exchange
    with pytest.raises(LatticeDecodeError, match="expected"):
        c.decode_relative(p[:-1], torch.ones(100))
    with pytest.raises(ValueError, match="lattice step"):
        c.encode(torch.ones(4))
    # empty and identical vectors are exact
    e, ok = c.decode_relative(c.encode(torch.empty(0), gen(0), 1e-3), torch.empty(0))
    assert ok and e.numel() == 0
    z = torch.full((64,), 0.25)
    eps = c.choose_eps(0.0, z)  # distance 0: the floor step, still decodable
    zh, ok = c.decode_relative(c.encode(z, gen(0), eps), z)
    assert ok and float((zh - z).abs().max()) <= 1e-9


def test_checksum_catches_any_single_wrong_coordinate():
    c = Lattice(bits=8)
    g = gen(11)
    k = torch.randint(-(10**9), 10**9, (3000,), generator=g)
    base = c.checksum(k)
    for i in torch.randint(0, 3000, (50,), generator=g).tolist():
        for m in (1, -1, 7, 255):
            wrong = k.clone()
            wrong[i] += 256 * m
            assert c.checksum(wrong) != base


@pytest.mark.gpu
def test_gpu_plain_backend_runs_on_the_host_with_the_same_bytes():
    """With ``HVD_COMPRESS_BACKEND=plain`` (no Triton) a CUDA tensor takes the plain path through
    the host: the payload lands on the tensor's device, byte-identical to the CPU one."""
    import os

    c = Lattice(bits=8)
    x = torch.randn(5000, generator=gen(3))
    y = x + 1e-3 * torch.randn(5000, generator=gen(4))
    noise = torch.rand(5000, generator=gen(5), dtype=torch.float64)
    eps = c.choose_eps(float((x - y).abs().max()), x)
    before = os.environ.get("HVD_COMPRESS_BACKEND")
    os.environ["HVD_COMPRESS_BACKEND"] = "plain"
    try:
        want = c.encode(x, gen(6), eps, noise=noise)
        got = c.encode(x.cuda(), gen(6), eps, noise=noise.cuda())
        assert got.device.type == "cuda" and torch.equal(got.cpu(), want)
        values, ok = c.decode_relative(got, y.cuda())
        want_values, want_ok = c.decode_relative(want, y)
        assert ok and want_ok and values.device.type == "cuda" and torch.equal(values.cpu(), want_values)
    finally:
        if before is None:
            del os.environ["HVD_COMPRESS_BACKEND"]
        else:
            os.environ["HVD_COMPRESS_BACKEND"] = before
