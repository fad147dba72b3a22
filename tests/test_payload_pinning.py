"""Spec: the wire format of every codec is pinned byte for byte, on both CPU paths.

``PINNED`` holds digests of the plain torch implementation (``HVD_COMPRESS_NATIVE=0``; the
definition of the wire format): payload bytes, decoded values, error-feedback residuals and
aggregates, for fixed inputs and fixed random draws (seeded generators and explicit noise). A
digest that changes means the wire format or the math changed: that breaks interoperability with
the TensorFlow frontend and with peers running an older version, so it is never a "just update the pin".

History: first recorded at commit d838d68 (before any speed work). Re-recorded once, when
``chunk_bounds`` (how the harness splits a tensor into three workers' chunks) changed: the current
plain code reproduces every d838d68 digest under the old ``chunk_bounds`` except TopK's, whose wire
format changed on purpose (indices ascending, for byte identity with TensorFlow).

The native kernels (``hvd_compress/_native``) must give the same digests, except where
:func:`native_may_differ` allows it, and those are pinned in ``NATIVE_PINNED``:

* stochastic codecs encoding from a seeded generator: the kernels draw their uniforms from their own
  counter-based stream (seeded by one draw from the generator), not from ``torch.rand``. With
  explicit ``noise`` (``encode_noise``) the bytes must be the plain path's;
* sum-based scales (OneBit's means, EFSign's mean |x|, QSGD's L2 norm) on inputs whose fp32 sums
  round ("randn"; error-feedback steps after the first, whose residuals hold rounded means): the
  kernels sum in double and round once, torch sums in fp32 (they differ by at most 3 ulp);
  QSGD-L2 on subnormal inputs ("tiny"), whose squares underflow in torch's fp32 sum.

Two inputs per codec: a "grid" whose every reduction (bucket sums, means, norms) is exact in fp32
whatever the summation order (values are small multiples of 1/16), and generic ``randn`` floats,
whose sums round. The digests are computed in a child process with one thread and torch's AVX2
kernels (``ATEN_CPU_CAPABILITY=avx2``), so they do not depend on the SIMD width or core count of the
machine running the test (they do depend on torch's reduction order: re-record them, from the
plain implementation, when upgrading torch). Subnormal inputs ("tiny") and NaN/Inf exercise the
fall-back paths.

The digests live in ``tests/data/payload_digests.json`` (``"plain"``: ``PINNED``; ``"native"``:
``NATIVE_PINNED``). To compare the current code with them (prints what differs, exits 1 if
anything does, never writes)::

    PYTHONPATH=. python tests/test_payload_pinning.py

and to rewrite the file (for a new case or a torch upgrade, never to paper over a change)::

    PYTHONPATH=. python tests/test_payload_pinning.py --update

Both compute the digests in child processes with one thread and ``ATEN_CPU_CAPABILITY=avx2``,
exactly as the tests do.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import codec_cases
import pytest
import torch

from hvd_compress.common import chunk_bounds
from hvd_compress.torch import from_spec
from hvd_compress.torch import packing

SPECS = codec_cases.specs("pinned")  # the one table of per-codec test facts (tests/codec_cases.py)
# Sizes: ragged (not a whole number of bytes, buckets or base-3 groups) and large enough to span
# several internal blocks of a cache-blocked implementation.
SIZES = [3001, 150_011]


def _digest(t: torch.Tensor) -> str:
    t = t.detach().contiguous()
    if t.dtype != torch.uint8:
        t = t.view(torch.uint8) if t.numel() else torch.empty(0, dtype=torch.uint8)
    return hashlib.sha256(t.numpy().tobytes()).hexdigest()[:16]


def _grid(n: int, seed: int) -> torch.Tensor:
    """Multiples of 1/16 in [-1, 1] (sums of up to 2**20 of them are exact in fp32), with exact zeros, -0.0 and one all-zero bucket-sized run."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(-16, 17, (n,), generator=g).to(torch.float32) / 16
    x[5:9] = 0.0
    x[9] = -0.0
    x[1024:2048] = 0.0
    return x


def _randn(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g) * 1e-3


def _tiny(n: int, seed: int) -> torch.Tensor:
    """Subnormal values (the grid times 2**-140): scales whose inverse overflows fp32."""
    return _grid(n, seed) * 2.0**-140


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _draw(codec):
    return lambda chunk, phase: _gen(1000 + 10 * chunk + phase) if codec.stochastic else None


def _scale_for(codec, x):
    if not codec.shared_scale:
        return None
    # a fixed shared scale (as if agreed by allreduce-MAX), exactly representable
    return torch.tensor([float(x.abs().max()) * 0.75])


def case_digests(spec: str, data: str, n: int) -> dict:
    codec = from_spec(spec)
    x = {"grid": _grid, "randn": _randn, "tiny": _tiny}[data](n, 1)
    out = {}
    scale = _scale_for(codec, x)
    payload = codec.encode(x, _gen(7), scale)
    out["encode"] = _digest(payload)
    out["decode"] = _digest(codec.decode(payload, n))
    quantizer = codec
    while hasattr(quantizer, "inner"):
        quantizer = quantizer.inner
    if quantizer.stochastic:  # explicit noise: what the TF frontend feeds to get the same bytes
        noise = torch.rand(n, generator=_gen(11))
        out["encode_noise"] = _digest(quantizer.encode(x, None, scale, noise=noise))
    # aggregate of three workers' payloads
    others = [x, -0.5 * x, 0.25 * x.flip(0)]
    payloads = [codec.encode(v, _gen(20 + i), scale) for i, v in enumerate(others)]
    out["aggregate"] = _digest(codec.aggregate(payloads, n))
    # two steps of the worker side over three chunks (error-feedback residuals carried)
    bounds = chunk_bounds(n, 3, codec.alignment())
    for step, v in enumerate((x, 0.5 * x.flip(0))):
        pls = codec.worker_encode(v, "layer.weight", bounds, _draw(codec), scale)
        out[f"worker{step}"] = _digest(torch.cat(pls))
        res = codec.state.get("residual", {}).get("layer.weight")
        if res is not None:
            out[f"residual{step}"] = _digest(res)
    # two steps of the owner side (server residual for DoubleSqueeze)
    a, b = bounds[1]
    for step in range(2):
        pl = codec.server_encode(x[a:b] * (0.5**step), "layer.weight", _draw(codec), 1, scale)
        out[f"server{step}"] = _digest(pl)
    res = codec.state.get("server_residual", {}).get("layer.weight")
    if res is not None:
        out["server_residual"] = _digest(res)
    return out


def nonfinite_digests(spec: str) -> dict:
    codec = from_spec(spec)
    x = _grid(3001, 3)
    x[17] = float("nan")
    x[2500] = float("inf")
    scale = _scale_for(codec, torch.nan_to_num(x, nan=0.0, posinf=0.0))
    payload = codec.encode(x, _gen(7), scale)
    return {"encode": _digest(payload), "decode": _digest(codec.decode(payload, x.numel()))}


def packing_digests() -> dict:
    g = _gen(5)
    out = {}
    for n in (0, 1, 7, 8, 9, 4099, 300_001):
        for bits in (1, 2, 4, 8):
            codes = torch.randint(0, 2**bits, (n,), generator=g, dtype=torch.uint8)
            packed = packing.pack_bits(codes, bits)
            out[f"bits{bits}_n{n}"] = _digest(packed)
            assert torch.equal(packing.unpack_bits(packed, bits, n), codes)
        trits = torch.randint(0, 3, (n,), generator=g, dtype=torch.uint8)
        packed = packing.pack_base3(trits)
        out[f"base3_n{n}"] = _digest(packed)
        assert torch.equal(packing.unpack_base3(packed, n), trits)
    return out


def all_digests() -> dict:
    out = {"packing": packing_digests()}
    for spec in SPECS:
        for n in SIZES:
            out[f"{spec}|grid|{n}"] = case_digests(spec, "grid", n)
            out[f"{spec}|randn|{n}"] = case_digests(spec, "randn", n)
        out[f"{spec}|tiny|{SIZES[0]}"] = case_digests(spec, "tiny", SIZES[0])
        out[f"{spec}|nonfinite"] = nonfinite_digests(spec)
    return out


# The golden digests (see the module docstring for their history) live in a data file; regenerate
# them with ``python tests/test_payload_pinning.py --update`` (see main()).
DIGESTS_FILE = Path(__file__).resolve().parent / "data" / "payload_digests.json"


def load_digests() -> dict:
    with open(DIGESTS_FILE) as f:
        return json.load(f)


_DIGESTS = load_digests()
PINNED: dict = _DIGESTS["plain"]
NATIVE_PINNED: dict = _DIGESTS["native"]

REPO = Path(__file__).resolve().parents[1]


def _has_avx2() -> bool:
    try:
        return " avx2" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


LATER_STEPS = ("worker1", "residual1", "server1", "server_residual")


def native_may_differ(case: str, key: str) -> bool:
    """Whether the native digest of ``case`` (``spec|data|n``) / ``key`` may differ from the plain
    one (see the module docstring). Everything else must be identical."""
    if case == "packing":
        return False
    spec, data = case.split("|")[:2]
    codec = from_spec(spec)
    while hasattr(codec, "inner"):
        codec = codec.inner
    if codec.stochastic and key != "encode_noise":
        return True  # generator-driven uniforms: the kernels' own stream
    l2 = getattr(codec, "norm", None) == "l2"
    sum_scaled = codec.name in ("onebit_quantizer", "scaled_sign") or (codec.name == "signsgd" and codec.scaled)
    if sum_scaled or l2:  # sum-based scales (signSGD's mean |x| comes from ScaledSign's kernel)
        if data == "randn" or (data == "grid" and key in LATER_STEPS):
            return True
        if l2 and data == "tiny":
            return True
    return False


def _child(native: bool) -> dict:
    env = dict(
        os.environ,
        ATEN_CPU_CAPABILITY="avx2",
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        HVD_COMPRESS_THREADS="1",
        PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    )
    proc = subprocess.run(
        [sys.executable, __file__, "--json", "--native", str(int(native))],
        capture_output=True,
        text=True,
        env=env,
        cwd=str(REPO),
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def _skip_unless_avx2():
    if platform.machine() not in ("x86_64", "AMD64") or not _has_avx2():
        pytest.skip(
            "digests are pinned for x86-64 AVX2 kernels (ATEN_CPU_CAPABILITY=avx2); "
            f"this machine is {platform.machine()} without AVX2"
        )


@pytest.fixture(scope="module")
def digests():
    """All digests of the plain path, computed in a child process with one thread and torch's AVX2
    kernels, so the order of the (already exact) reductions cannot depend on this machine's SIMD
    width or cores."""
    _skip_unless_avx2()
    return _child(native=False)


@pytest.fixture(scope="module")
def native_digests():
    """The same digests with the native kernels (skipped where they cannot be built)."""
    _skip_unless_avx2()
    from hvd_compress import _native

    if _native.load() is None:
        pytest.skip(f"native kernels unavailable: {_native.unavailable_reason()}")
    return _child(native=True)


def native_expected(case: str) -> dict:
    return {**PINNED[case], **NATIVE_PINNED.get(case, {})}


def _mismatches(got: dict, want: dict) -> list:
    keys = sorted(set(got) | set(want))
    return [f"{k}: got {got.get(k)} pinned {want.get(k)}" for k in keys if got.get(k) != want.get(k)]


def test_packing_layout_is_pinned(digests):
    assert not _mismatches(digests["packing"], PINNED["packing"])


@pytest.mark.parametrize("spec", SPECS)
def test_codec_bytes_are_pinned(digests, spec):
    """Payloads, decoded values, aggregates, worker and server residuals of ``spec``."""
    keys = [k for k in PINNED if k.split("|")[0] == spec]
    assert keys, f"no pinned digests for {spec}"
    bad = [m for k in keys for m in _mismatches(digests[k], PINNED[k])]
    assert not bad, f"{spec}: wire format or math changed:\n" + "\n".join(bad)


def test_native_packing_layout_is_pinned(native_digests):
    assert not _mismatches(native_digests["packing"], PINNED["packing"])


@pytest.mark.parametrize("spec", SPECS)
def test_native_codec_bytes_are_pinned(native_digests, spec):
    """The native kernels give the plain path's digests, except the cases
    :func:`native_may_differ` allows, which are pinned in ``NATIVE_PINNED``."""
    keys = [k for k in PINNED if k.split("|")[0] == spec]
    bad = [m for k in keys for m in _mismatches(native_digests[k], native_expected(k))]
    assert not bad, f"{spec} (native): wire format or math changed:\n" + "\n".join(bad)


def test_native_pins_only_where_allowed():
    """``NATIVE_PINNED`` overrides only digests that are allowed to differ, and only real
    differences (an override equal to the plain pin would hide nothing, but is noise)."""
    for case, keys in NATIVE_PINNED.items():
        for key, digest in keys.items():
            assert native_may_differ(case, key), f"{case} {key}: the native path must match the plain pin"
            assert digest != PINNED[case].get(key), f"{case} {key}: override equals the plain pin"


def regenerate() -> dict:
    """The data file's content for the current code: the plain digests, and the native digests
    that differ from them (each computed in a child process, as the tests do)."""
    plain = _child(native=False)
    native = _child(native=True)
    diff = {case: {k: v for k, v in keys.items() if plain.get(case, {}).get(k) != v} for case, keys in native.items()}
    return {"_about": _DIGESTS.get("_about", ""), "plain": plain, "native": {c: d for c, d in diff.items() if d}}


def main():
    """``--json --native N``: print this process's digests (what the tests' child processes run).

    Otherwise: recompute every digest and compare with ``tests/data/payload_digests.json``;
    print what differs and exit 1, or with ``--update`` rewrite the file (for a new case or a
    torch upgrade, never to paper over a wire-format change; see the module docstring)."""
    if "--json" in sys.argv:
        torch.set_num_threads(1)
        native = sys.argv[sys.argv.index("--native") + 1] if "--native" in sys.argv else "1"
        os.environ["HVD_COMPRESS_NATIVE"] = native
        print(json.dumps(all_digests()))
        return 0
    fresh = regenerate()
    changed = []
    for part in ("plain", "native"):
        for case in sorted(set(fresh[part]) | set(_DIGESTS[part])):
            changed += [
                f"{part} {case} {m}" for m in _mismatches(fresh[part].get(case, {}), _DIGESTS[part].get(case, {}))
            ]
    if not changed:
        print(f"{DIGESTS_FILE}: up to date ({len(fresh['plain'])} cases)")
        return 0
    print("\n".join(changed))
    if "--update" not in sys.argv:
        print(
            f"{len(changed)} digests differ from {DIGESTS_FILE}; not overwriting it. Rerun with "
            "--update to rewrite it (only for a new case or a torch upgrade).",
            file=sys.stderr,
        )
        return 1
    with open(DIGESTS_FILE, "w") as f:
        json.dump(fresh, f, indent=1)
        f.write("\n")
    print(f"rewrote {DIGESTS_FILE} ({len(changed)} digests changed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
