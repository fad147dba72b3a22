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

To print the digests of the current code (for a new case, never to paper over a change)::

    ATEN_CPU_CAPABILITY=avx2 OMP_NUM_THREADS=1 PYTHONPATH=. python tests/test_payload_pinning.py --native 0
    ATEN_CPU_CAPABILITY=avx2 OMP_NUM_THREADS=1 PYTHONPATH=. python tests/test_payload_pinning.py --native 1
"""
from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hvd_compress.common import chunk_bounds
from hvd_compress.torch import from_spec
from hvd_compress.torch import packing

SPECS = ["none", "fp16", "bf16", "qsgd:bits=2,bucket_size=128", "qsgd:bits=4", "qsgd:bits=8",
         "qsgd:bits=4,norm=l2", "qsgd:bits=4,bucket_size=100", "terngrad", "terngrad:packing=2bit",
         "terngrad:clip=none", "onebit", "onebit:bucket_size=64", "efsign", "signsgd",
         "signsgd:scaled=false", "topk:ratio=0.01", "doublesqueeze:codec=onebit",
         "doublesqueeze:codec=qsgd,bits=4", "doublesqueeze:codec=efsign"]
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
    return _grid(n, seed) * 2.0 ** -140


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
    payloads = [codec.encode(v, _gen(20 + i), scale)
                for i, v in enumerate(others)]
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
        pl = codec.server_encode(x[a:b] * (0.5 ** step), "layer.weight", _draw(codec), 1, scale)
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
            codes = torch.randint(0, 2 ** bits, (n,), generator=g, dtype=torch.uint8)
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


# The plain path's digests (see the module docstring for their history).
PINNED: dict = {'packing': {'bits1_n0': 'e3b0c44298fc1c14',
             'bits2_n0': 'e3b0c44298fc1c14',
             'bits4_n0': 'e3b0c44298fc1c14',
             'bits8_n0': 'e3b0c44298fc1c14',
             'base3_n0': 'e3b0c44298fc1c14',
             'bits1_n1': '4bf5122f344554c5',
             'bits2_n1': 'dbc1b4c900ffe48d',
             'bits4_n1': 'dc0e9c3658a1a3ed',
             'bits8_n1': '68325720aabd7c82',
             'base3_n1': 'dbc1b4c900ffe48d',
             'bits1_n7': '09fc96082d34c2df',
             'bits2_n7': 'ea46599a238699be',
             'bits4_n7': 'ba73bd711f44d2bc',
             'bits8_n7': '00e6cdbb0dd30b15',
             'base3_n7': '73547fe88b5ec9c0',
             'bits1_n8': '6da43b944e494e88',
             'bits2_n8': '9609dd4b6ba756ff',
             'bits4_n8': '91f0774aea00cbab',
             'bits8_n8': 'd1a65f30517ce76b',
             'base3_n8': '1afea87ec0860845',
             'bits1_n9': 'da73abdb5c5eca1f',
             'bits2_n9': 'd29aff62e707ade4',
             'bits4_n9': 'e4fcd8b29fbc01bd',
             'bits8_n9': '9eba35e588f68d1e',
             'base3_n9': 'abd9c342b0b276ab',
             'bits1_n4099': 'c088fe07ecbfb05a',
             'bits2_n4099': 'f526bca067cd0da9',
             'bits4_n4099': '9e30ac3479fae6c7',
             'bits8_n4099': 'dc75938a3ee4c840',
             'base3_n4099': '3c4f9a4cf67e5b9b',
             'bits1_n300001': 'fe7ac6cb5818430a',
             'bits2_n300001': '0ce3d580be240971',
             'bits4_n300001': 'e3d9fc5a4d631c42',
             'bits8_n300001': 'ff947bdd3104059b',
             'base3_n300001': 'd9cc6c00fce706fc'},
 'none|grid|3001': {'encode': '55f844367002f7df',
                    'decode': '55f844367002f7df',
                    'aggregate': 'e39d773b978d3fc2',
                    'worker0': '55f844367002f7df',
                    'worker1': 'feb6e158a63c7686',
                    'server0': 'd59e3d93408ffd87',
                    'server1': '010e3454b9223fdd'},
 'none|randn|3001': {'encode': '7c16037d4474d643',
                     'decode': '7c16037d4474d643',
                     'aggregate': '32956c123fc09758',
                     'worker0': '7c16037d4474d643',
                     'worker1': '63a7778048d57248',
                     'server0': '0f75bc60aabe33a7',
                     'server1': '81206b687800c026'},
 'none|grid|150011': {'encode': '6fa32d70a74ca99e',
                      'decode': '6fa32d70a74ca99e',
                      'aggregate': 'd5ac5f0cd5076016',
                      'worker0': '6fa32d70a74ca99e',
                      'worker1': 'f4a5dd11e13ad532',
                      'server0': '5608c01dba98bd0c',
                      'server1': '5e5b747cd0bdc8d8'},
 'none|randn|150011': {'encode': '0a4e41edae5c32fd',
                       'decode': '0a4e41edae5c32fd',
                       'aggregate': 'dbd6b1bb95d8de99',
                       'worker0': '0a4e41edae5c32fd',
                       'worker1': 'b2550c7961166dc8',
                       'server0': 'aace912110afb240',
                       'server1': 'eeee3aa3b8ddd12b'},
 'none|tiny|3001': {'encode': '4c6f366fce5ac9b3',
                    'decode': '4c6f366fce5ac9b3',
                    'aggregate': 'cfcadb70b17d245c',
                    'worker0': '4c6f366fce5ac9b3',
                    'worker1': '0f24e43f1336daa8',
                    'server0': 'b18eefee95617583',
                    'server1': '2e912d5a0f9d67ad'},
 'none|nonfinite': {'encode': 'b73b9fd69e5ba371', 'decode': 'b73b9fd69e5ba371'},
 'fp16|grid|3001': {'encode': '853b1840f9097bbd',
                    'decode': '55f844367002f7df',
                    'aggregate': 'e39d773b978d3fc2',
                    'worker0': '853b1840f9097bbd',
                    'worker1': '56614a54f8ddb881',
                    'server0': 'd57ddaaa11f4f7f5',
                    'server1': 'c67939ba293f36f2'},
 'fp16|randn|3001': {'encode': '9aba7f3798d31469',
                     'decode': '744431481357a850',
                     'aggregate': '6ed60af9c7675fcc',
                     'worker0': '9aba7f3798d31469',
                     'worker1': 'a330cc2097a770cf',
                     'server0': '10ebd18851aed2cc',
                     'server1': '863a228ea6254450'},
 'fp16|grid|150011': {'encode': 'a7d1163da69c0dcc',
                      'decode': '6fa32d70a74ca99e',
                      'aggregate': 'd5ac5f0cd5076016',
                      'worker0': 'a7d1163da69c0dcc',
                      'worker1': '3239e457d4ca4826',
                      'server0': 'eb07f5eabe451dc7',
                      'server1': '689ba442d430c9b9'},
 'fp16|randn|150011': {'encode': 'fb6ad1c77e5ae915',
                       'decode': '2025fd95772e9325',
                       'aggregate': '0372beb0190d6ab6',
                       'worker0': 'fb6ad1c77e5ae915',
                       'worker1': '830c3e4635663e58',
                       'server0': '100959fca589683e',
                       'server1': 'b2dd035cb310c3ab'},
 'fp16|tiny|3001': {'encode': 'fafde05c92b7025a',
                    'decode': '5e9f3e8d1d8bf19c',
                    'aggregate': 'e9f7a825dff381ba',
                    'worker0': 'fafde05c92b7025a',
                    'worker1': '66b4180c1004f048',
                    'server0': 'd016917fe239a5c4',
                    'server1': 'd016917fe239a5c4'},
 'fp16|nonfinite': {'encode': 'c04812e54ccf3313', 'decode': 'b73b9fd69e5ba371'},
 'bf16|grid|3001': {'encode': 'dc81daa737cc01ba',
                    'decode': '55f844367002f7df',
                    'aggregate': 'e39d773b978d3fc2',
                    'worker0': 'dc81daa737cc01ba',
                    'worker1': 'cd049c59ed279ebc',
                    'server0': '2a97f7b0bdc47c01',
                    'server1': '397b145ff509fff4'},
 'bf16|randn|3001': {'encode': 'b58cd805674ea713',
                     'decode': '827651a2c74ec6c5',
                     'aggregate': '483c5469c9eafbc4',
                     'worker0': 'b58cd805674ea713',
                     'worker1': '96d81b4c537280b2',
                     'server0': '36640e71e229331f',
                     'server1': 'efdd947144902872'},
 'bf16|grid|150011': {'encode': '599acfb26f1b0355',
                      'decode': '6fa32d70a74ca99e',
                      'aggregate': 'd5ac5f0cd5076016',
                      'worker0': '599acfb26f1b0355',
                      'worker1': '6b40660256d6ed9e',
                      'server0': '64b9356b283d02d9',
                      'server1': '389c0abd8d61aa50'},
 'bf16|randn|150011': {'encode': '581919196aeedbef',
                       'decode': 'c46055b1f9ad6d59',
                       'aggregate': 'e09d0e6e265c6764',
                       'worker0': '581919196aeedbef',
                       'worker1': '7d318bd3c00cfff2',
                       'server0': '5f64aa2eb4b8424e',
                       'server1': '371f41339c3d079b'},
 'bf16|tiny|3001': {'encode': 'fafde05c92b7025a',
                    'decode': '5e9f3e8d1d8bf19c',
                    'aggregate': 'e9f7a825dff381ba',
                    'worker0': 'fafde05c92b7025a',
                    'worker1': '66b4180c1004f048',
                    'server0': 'd016917fe239a5c4',
                    'server1': 'd016917fe239a5c4'},
 'bf16|nonfinite': {'encode': '7b2d041dfb074e1e', 'decode': '693b6052a81fb4ba'},
 'qsgd:bits=2,bucket_size=128|grid|3001': {'encode': 'a335c4d18488f2fa',
                                           'decode': '2fc3806fb2826585',
                                           'encode_noise': '31ce462e6718d709',
                                           'aggregate': 'be037848979ae343',
                                           'worker0': 'e24ffddfd08b860b',
                                           'worker1': '05f6a7bf2698a571',
                                           'server0': '2865d382c8e4166c',
                                           'server1': '2865d382c8e4166c'},
 'qsgd:bits=2,bucket_size=128|randn|3001': {'encode': '632ad240b3c936a6',
                                            'decode': '039d49708431e1d0',
                                            'encode_noise': 'b512b2a1f2070327',
                                            'aggregate': '03168f04002365d9',
                                            'worker0': '67a423058806ebc0',
                                            'worker1': 'a856fddfefdb2fef',
                                            'server0': '37b79481e6bc8b92',
                                            'server1': '8993df1d9cdd1807'},
 'qsgd:bits=2,bucket_size=128|grid|150011': {'encode': 'a6298571f50ff7ea',
                                             'decode': '524c03c8ba442779',
                                             'encode_noise': '3142e58c11422f77',
                                             'aggregate': '33111075f3dbd541',
                                             'worker0': 'af9b5cbec3017051',
                                             'worker1': 'a153ab1a72809921',
                                             'server0': '582899d95977d336',
                                             'server1': '64a71d859cd27b05'},
 'qsgd:bits=2,bucket_size=128|randn|150011': {'encode': '8757772c15e44ca8',
                                              'decode': 'db107927e1910c1d',
                                              'encode_noise': 'afdb22866ce3e64c',
                                              'aggregate': '373b62b432d199ff',
                                              'worker0': '9cbe04863fc33f68',
                                              'worker1': 'daf2553c4e8bbf48',
                                              'server0': 'e12b43304a291e52',
                                              'server1': 'a488bfe5eae914f5'},
 'qsgd:bits=2,bucket_size=128|tiny|3001': {'encode': 'ce4a8d9730f73500',
                                           'decode': 'a84ba01271515a46',
                                           'encode_noise': 'ce4a8d9730f73500',
                                           'aggregate': '7c25c6ecf696dddc',
                                           'worker0': '00ff78ed117248f9',
                                           'worker1': '0ba5ee4e30ed85ee',
                                           'server0': '2865d382c8e4166c',
                                           'server1': '2865d382c8e4166c'},
 'qsgd:bits=2,bucket_size=128|nonfinite': {'encode': '27f533f3d3fd2513', 'decode': '3fb87a6e9169f30a'},
 'qsgd:bits=4|grid|3001': {'encode': '9fff60643b05b6f9',
                           'decode': 'cdeeaddf24b66dfa',
                           'encode_noise': '164ec7cd5a745b56',
                           'aggregate': '6e7b7cf76a7ce8e5',
                           'worker0': '4b0742a6c117e047',
                           'worker1': 'd31233da65f79d56',
                           'server0': '38f67ac7617a8595',
                           'server1': '38f67ac7617a8595'},
 'qsgd:bits=4|randn|3001': {'encode': 'de484a160d56355b',
                            'decode': 'c8f90c4beed0a370',
                            'encode_noise': 'e604621f4927583c',
                            'aggregate': '2ea14855b41fbf0b',
                            'worker0': '0b05b51b0d6ffae3',
                            'worker1': 'c861d487ce5fecf1',
                            'server0': '189c1b4fc0d925fc',
                            'server1': 'eecbcc6cd716813f'},
 'qsgd:bits=4|grid|150011': {'encode': '290e83e0e5f96338',
                             'decode': 'fadd9004122872be',
                             'encode_noise': '4174abe67a52df9b',
                             'aggregate': '9ae85bf37435ee0c',
                             'worker0': '568e436ca2175ea6',
                             'worker1': 'ff810e47b69acb80',
                             'server0': '522c5284de071e37',
                             'server1': '171afe5fc7ec1f30'},
 'qsgd:bits=4|randn|150011': {'encode': '3f79cd168bc0408f',
                              'decode': 'd905cb53a4c869bc',
                              'encode_noise': 'b3d299962c751a26',
                              'aggregate': '8435a7dbb1d7b0be',
                              'worker0': '56ed3773de328e49',
                              'worker1': '869fdda36e5f7397',
                              'server0': '42f7c83c16f5edee',
                              'server1': 'ae73289dcad8a7fa'},
 'qsgd:bits=4|tiny|3001': {'encode': '484269cb1cf6900a',
                           'decode': 'fc4ed40e1b3b8182',
                           'encode_noise': '484269cb1cf6900a',
                           'aggregate': '9863556284c5e4ff',
                           'worker0': '6a655be63ab2e55e',
                           'worker1': 'b7dc361d5006e57b',
                           'server0': '38f67ac7617a8595',
                           'server1': '38f67ac7617a8595'},
 'qsgd:bits=4|nonfinite': {'encode': '02c3ebeae4ca8564', 'decode': '728f0dadc92b908c'},
 'qsgd:bits=8|grid|3001': {'encode': 'e84953026c7cf059',
                           'decode': 'bde9140ce07a8081',
                           'encode_noise': '6cf736facaf1c9a8',
                           'aggregate': 'f62970fbe0c35b14',
                           'worker0': '0f41443073e03e5e',
                           'worker1': '0f07cd9fe93cf73d',
                           'server0': 'b1b966864a979856',
                           'server1': 'b1b966864a979856'},
 'qsgd:bits=8|randn|3001': {'encode': 'c746a47cff7bbdd2',
                            'decode': '81923477b848906d',
                            'encode_noise': '05291edcfc32d3a7',
                            'aggregate': '6688246d94894521',
                            'worker0': '6a923d893e68dff2',
                            'worker1': '01d20782e3cfb060',
                            'server0': '34b849ac9b49078d',
                            'server1': '68483224a60a1dbe'},
 'qsgd:bits=8|grid|150011': {'encode': '539bb92db154e839',
                             'decode': '739991b15a053049',
                             'encode_noise': 'f4a4936e79a4f3b5',
                             'aggregate': '875dfccd2d06994a',
                             'worker0': 'ca6628b7895404bf',
                             'worker1': 'bf8665a54bcc531a',
                             'server0': '255770873c1ebce5',
                             'server1': '5b1b1316f4820110'},
 'qsgd:bits=8|randn|150011': {'encode': 'c9129459829d3944',
                              'decode': '3df7e9d19b33963c',
                              'encode_noise': '9467edc199ce9e88',
                              'aggregate': '0337412d43900b66',
                              'worker0': '0f87f4c69bcb7d34',
                              'worker1': '8008afe5f8507608',
                              'server0': '229f8e25309e8b3d',
                              'server1': '0e2f183fca113dc0'},
 'qsgd:bits=8|tiny|3001': {'encode': 'd0742fee3a6f2c52',
                           'decode': '64432e4552688774',
                           'encode_noise': 'd0742fee3a6f2c52',
                           'aggregate': '15b9815e0a59f7bc',
                           'worker0': 'da2ccfe62607889a',
                           'worker1': '7cffc393b7866247',
                           'server0': 'b1b966864a979856',
                           'server1': 'b1b966864a979856'},
 'qsgd:bits=8|nonfinite': {'encode': '9218c023b1be5677', 'decode': '077a944ae1067de6'},
 'qsgd:bits=4,norm=l2|grid|3001': {'encode': '214f0226331a859b',
                                   'decode': '01fd716ba91d6d25',
                                   'encode_noise': 'e7574c364dc89dd9',
                                   'aggregate': '550d1d2137305549',
                                   'worker0': '8a55905be7292f1d',
                                   'worker1': '0804451432974ca4',
                                   'server0': '38f67ac7617a8595',
                                   'server1': '38f67ac7617a8595'},
 'qsgd:bits=4,norm=l2|randn|3001': {'encode': '2a8f5b102ed83b43',
                                    'decode': '8d70a3c183ef2bcf',
                                    'encode_noise': 'c1019c1c1c4ad4f5',
                                    'aggregate': 'a59529be369eaccd',
                                    'worker0': 'd119561a2eab1c9d',
                                    'worker1': '2bb19f8b9b0226f9',
                                    'server0': '11be0dc2e7690bb9',
                                    'server1': '2a331d76b5fec947'},
 'qsgd:bits=4,norm=l2|grid|150011': {'encode': 'bf5b9201515a4ec5',
                                     'decode': 'c3ad4136053f07c9',
                                     'encode_noise': 'd1b13c1ef57ccd72',
                                     'aggregate': '69e0d13fd5c22c3b',
                                     'worker0': '88639f77669211d9',
                                     'worker1': 'b86b3e9ce10780c0',
                                     'server0': '878cfbf158e61180',
                                     'server1': '10ea6c4615a3bc6e'},
 'qsgd:bits=4,norm=l2|randn|150011': {'encode': '800510233dc6e925',
                                      'decode': 'a7326101bf619e2d',
                                      'encode_noise': '07a1d337861d0d90',
                                      'aggregate': 'abc92962a696e8e2',
                                      'worker0': '0ed2822a32ad5bc0',
                                      'worker1': '6a0ecae25a21e07c',
                                      'server0': '170fcf4cec1023c8',
                                      'server1': '79146e81fab1fd96'},
 'qsgd:bits=4,norm=l2|tiny|3001': {'encode': 'c665685a370c3d3d',
                                   'decode': 'e9f7a825dff381ba',
                                   'encode_noise': 'c665685a370c3d3d',
                                   'aggregate': 'e9f7a825dff381ba',
                                   'worker0': 'da687e698d0c7423',
                                   'worker1': 'da687e698d0c7423',
                                   'server0': '38f67ac7617a8595',
                                   'server1': '38f67ac7617a8595'},
 'qsgd:bits=4,norm=l2|nonfinite': {'encode': '144f545eb58a3dfb', 'decode': '1eedfad818948345'},
 'qsgd:bits=4,bucket_size=100|grid|3001': {'encode': 'bcca76067f62337b',
                                           'decode': 'f0e1d050fff70908',
                                           'encode_noise': '1bfe98b4b17579a9',
                                           'aggregate': '0228f4a791048cec',
                                           'worker0': 'd818eb51e1217f6b',
                                           'worker1': 'd82b5b93c85b8eae',
                                           'server0': '28aa7c7f5df441e2',
                                           'server1': '684ef56b4d8fda69'},
 'qsgd:bits=4,bucket_size=100|randn|3001': {'encode': '20feb5c190819447',
                                            'decode': 'e1fd0047c56ec6a7',
                                            'encode_noise': '6cdf07a16d6c89f9',
                                            'aggregate': 'e28624777997d967',
                                            'worker0': '185a87916fc10f7d',
                                            'worker1': '6893d4185a81409e',
                                            'server0': '50434b7f34a72762',
                                            'server1': '9dc7bba32cf24fab'},
 'qsgd:bits=4,bucket_size=100|grid|150011': {'encode': 'b545f34c49cc9862',
                                             'decode': '6a13ffd156609070',
                                             'encode_noise': '93c2afd5e3c8fd98',
                                             'aggregate': '6bb28000a39e4cc0',
                                             'worker0': '66b86a8ae767a5d2',
                                             'worker1': 'df63335c5b18709c',
                                             'server0': '32be60f40cc6ee65',
                                             'server1': 'c77210d243d2daee'},
 'qsgd:bits=4,bucket_size=100|randn|150011': {'encode': 'df1d8f3f1903281e',
                                              'decode': '0358b29c74533f6c',
                                              'encode_noise': '75728156a575dc32',
                                              'aggregate': '406c4f3be7e34ff7',
                                              'worker0': '0386fe65a564c373',
                                              'worker1': '418bc2774590cac2',
                                              'server0': 'ac6d2439fed44330',
                                              'server1': 'e4df628b8eb0cec3'},
 'qsgd:bits=4,bucket_size=100|tiny|3001': {'encode': 'eb293b8ce1fc5ea1',
                                           'decode': '355499509f777625',
                                           'encode_noise': 'eb293b8ce1fc5ea1',
                                           'aggregate': '130fadc6ea14dadf',
                                           'worker0': '8b26d17801d3aa18',
                                           'worker1': '3930dd875eb2ed54',
                                           'server0': 'ff8fc3317723b4b0',
                                           'server1': 'ea5c3862b02fdf43'},
 'qsgd:bits=4,bucket_size=100|nonfinite': {'encode': 'f99d343789dca216', 'decode': 'c7e503c1e9dbf70b'},
 'terngrad|grid|3001': {'encode': 'c4cd0ed754a6e697',
                        'decode': 'a5a3b586008764f1',
                        'encode_noise': '6f97b8224ceb91e4',
                        'aggregate': 'dfb80174e2567487',
                        'worker0': '6e64a3e72f2e1515',
                        'worker1': '9fc3715cc70eb6f0',
                        'server0': 'e3d912eef0e1eabb',
                        'server1': 'e3d912eef0e1eabb'},
 'terngrad|randn|3001': {'encode': '7725b436eacec558',
                         'decode': '6a77aaa8b7fd5ba7',
                         'encode_noise': '951febe0a87be25e',
                         'aggregate': '71e8577cbce9941b',
                         'worker0': '393afb1e464d4635',
                         'worker1': 'a55bda1edf560ba7',
                         'server0': '08c92a5a15d21849',
                         'server1': 'f91e53c42c058e5a'},
 'terngrad|grid|150011': {'encode': 'b9b99b262ebc4e8f',
                          'decode': 'e94960716ef573e8',
                          'encode_noise': '6ce10548a4d62f79',
                          'aggregate': 'b30bf92ada65bfdf',
                          'worker0': 'bcb60f56bc83b5ef',
                          'worker1': '4e28ce04a20406bb',
                          'server0': '9f29460d13e51cc2',
                          'server1': 'c2ea440e1064ac1e'},
 'terngrad|randn|150011': {'encode': '13d7ce0568987f0b',
                           'decode': 'f8e0c79b36568853',
                           'encode_noise': '2949bb35913f6198',
                           'aggregate': '973412e755761731',
                           'worker0': '54d5409bce060bb2',
                           'worker1': '127a46d3437476b3',
                           'server0': '29d94539988d2226',
                           'server1': '3568fbfe8bf020a3'},
 'terngrad|tiny|3001': {'encode': '24af57e9d4695717',
                        'decode': 'f3bee13af9034c7b',
                        'encode_noise': 'b2f0635feac32fdd',
                        'aggregate': '644e91e65b152d42',
                        'worker0': 'e91d17dd8fa8063a',
                        'worker1': '4d59d3af42a36ce3',
                        'server0': '79ee88b6befd6854',
                        'server1': '79ee88b6befd6854'},
 'terngrad|nonfinite': {'encode': '59653b53497176ed', 'decode': '1cb79ba1d1a2b763'},
 'terngrad:packing=2bit|grid|3001': {'encode': '79c5189131a00eb7',
                                     'decode': 'a5a3b586008764f1',
                                     'encode_noise': '41c01d9d190c9b16',
                                     'aggregate': 'dfb80174e2567487',
                                     'worker0': 'c920bac45d7c71d2',
                                     'worker1': '6189aaa5d4d616fb',
                                     'server0': 'a45ab67950316bee',
                                     'server1': 'a45ab67950316bee'},
 'terngrad:packing=2bit|randn|3001': {'encode': '65d1a086b83a70b1',
                                      'decode': '6a77aaa8b7fd5ba7',
                                      'encode_noise': '8321e654628bb0f4',
                                      'aggregate': '71e8577cbce9941b',
                                      'worker0': '2af43ff9054f76d0',
                                      'worker1': 'd118ad2a256fc4a1',
                                      'server0': '745cc2d95ff50651',
                                      'server1': 'f43cc91528354d79'},
 'terngrad:packing=2bit|grid|150011': {'encode': 'df2dc734c99f823f',
                                       'decode': 'e94960716ef573e8',
                                       'encode_noise': '2b0658f26b1c141f',
                                       'aggregate': 'b30bf92ada65bfdf',
                                       'worker0': '814d63d27cebdd95',
                                       'worker1': 'b4bb67afa4b1c2c0',
                                       'server0': '6190608cd81685a9',
                                       'server1': 'a949a187d4255869'},
 'terngrad:packing=2bit|randn|150011': {'encode': '078a7aae1e57bb2f',
                                        'decode': 'f8e0c79b36568853',
                                        'encode_noise': '5931a97f4b7766db',
                                        'aggregate': '973412e755761731',
                                        'worker0': '31498b91c2f2959e',
                                        'worker1': 'b2da96ac544854de',
                                        'server0': 'b7a060dfd60e4c68',
                                        'server1': '45c1c2740bb8958a'},
 'terngrad:packing=2bit|tiny|3001': {'encode': '4471fbc893528a27',
                                     'decode': 'f3bee13af9034c7b',
                                     'encode_noise': 'fb25948994492975',
                                     'aggregate': '644e91e65b152d42',
                                     'worker0': '68395b4a8e118243',
                                     'worker1': 'd2b424f1144159d8',
                                     'server0': '479d74bc7845faf9',
                                     'server1': '479d74bc7845faf9'},
 'terngrad:packing=2bit|nonfinite': {'encode': '3b9bf3a2ce928688', 'decode': '1cb79ba1d1a2b763'},
 'terngrad:clip=none|grid|3001': {'encode': 'c4cd0ed754a6e697',
                                  'decode': 'a5a3b586008764f1',
                                  'encode_noise': '6f97b8224ceb91e4',
                                  'aggregate': 'dfb80174e2567487',
                                  'worker0': '6e64a3e72f2e1515',
                                  'worker1': '9fc3715cc70eb6f0',
                                  'server0': 'e3d912eef0e1eabb',
                                  'server1': 'e3d912eef0e1eabb'},
 'terngrad:clip=none|randn|3001': {'encode': '7725b436eacec558',
                                   'decode': '6a77aaa8b7fd5ba7',
                                   'encode_noise': '951febe0a87be25e',
                                   'aggregate': '71e8577cbce9941b',
                                   'worker0': '393afb1e464d4635',
                                   'worker1': 'a55bda1edf560ba7',
                                   'server0': '08c92a5a15d21849',
                                   'server1': 'f91e53c42c058e5a'},
 'terngrad:clip=none|grid|150011': {'encode': 'b9b99b262ebc4e8f',
                                    'decode': 'e94960716ef573e8',
                                    'encode_noise': '6ce10548a4d62f79',
                                    'aggregate': 'b30bf92ada65bfdf',
                                    'worker0': 'bcb60f56bc83b5ef',
                                    'worker1': '4e28ce04a20406bb',
                                    'server0': '9f29460d13e51cc2',
                                    'server1': 'c2ea440e1064ac1e'},
 'terngrad:clip=none|randn|150011': {'encode': '13d7ce0568987f0b',
                                     'decode': 'f8e0c79b36568853',
                                     'encode_noise': '2949bb35913f6198',
                                     'aggregate': '973412e755761731',
                                     'worker0': '54d5409bce060bb2',
                                     'worker1': '127a46d3437476b3',
                                     'server0': '29d94539988d2226',
                                     'server1': '3568fbfe8bf020a3'},
 'terngrad:clip=none|tiny|3001': {'encode': '24af57e9d4695717',
                                  'decode': 'f3bee13af9034c7b',
                                  'encode_noise': 'b2f0635feac32fdd',
                                  'aggregate': '644e91e65b152d42',
                                  'worker0': 'e91d17dd8fa8063a',
                                  'worker1': '4d59d3af42a36ce3',
                                  'server0': '79ee88b6befd6854',
                                  'server1': '79ee88b6befd6854'},
 'terngrad:clip=none|nonfinite': {'encode': '59653b53497176ed', 'decode': '1cb79ba1d1a2b763'},
 'onebit|grid|3001': {'encode': 'e6bcee9723b56e30',
                      'decode': '9d28a8508508d600',
                      'aggregate': '1ba87b743c67c453',
                      'worker0': '91d83a704ed6ded0',
                      'residual0': 'da009f877131dced',
                      'worker1': 'de0a3a61b872799c',
                      'residual1': '76c9e69831f974cc',
                      'server0': 'a30e29ef738e6dd4',
                      'server1': 'a30e29ef738e6dd4'},
 'onebit|randn|3001': {'encode': '0687ecb0a3874af0',
                       'decode': '3990f12d429a32df',
                       'aggregate': 'f8c80b297a956d88',
                       'worker0': '0d94d556783655f4',
                       'residual0': 'f614a73965e4641e',
                       'worker1': '4a34be637c61510f',
                       'residual1': '59affa86cc693de6',
                       'server0': '1925ec1578f1c9a8',
                       'server1': '53184178bc41746d'},
 'onebit|grid|150011': {'encode': '6a6011485d0f7f13',
                        'decode': 'a2ece7525e4d8d9b',
                        'aggregate': '009cf873c9574cfd',
                        'worker0': '933cbcc9adc71375',
                        'residual0': '46ee2926c042e398',
                        'worker1': '6abda8826f1d33c7',
                        'residual1': '940b0194ab7f94d7',
                        'server0': 'e4460d9d51c0c9a7',
                        'server1': '6ec355ab5e4a6ce6'},
 'onebit|randn|150011': {'encode': '029ebdfb889e477c',
                         'decode': '89779b7e98f10b32',
                         'aggregate': '4107acfc98ce3904',
                         'worker0': '772a4d408b44679f',
                         'residual0': 'e36a7ab17de147d4',
                         'worker1': '28bc7f2298ddf22b',
                         'residual1': '008a6372efad16d3',
                         'server0': '76cde116681281bd',
                         'server1': '871371d37def2a2b'},
 'onebit|tiny|3001': {'encode': 'b07c5018904fd5ce',
                      'decode': 'e26ff70afacaf824',
                      'aggregate': '39f3d8c6f670b7a1',
                      'worker0': 'c09b66c47ce29cf0',
                      'residual0': '7246e93b9505cb18',
                      'worker1': '9f1e203acc93d91c',
                      'residual1': '4b4ecd3ce48e3500',
                      'server0': 'a30e29ef738e6dd4',
                      'server1': 'a30e29ef738e6dd4'},
 'onebit|nonfinite': {'encode': 'df0b2b4a45cd57f8', 'decode': '4776cda47702ad8a'},
 'onebit:bucket_size=64|grid|3001': {'encode': '67fd3dcd4f7153b0',
                                     'decode': '4a4911b2c71789c7',
                                     'aggregate': 'e9908f1edc186970',
                                     'worker0': 'c232dd23bba627a1',
                                     'residual0': 'e51420c30a317ceb',
                                     'worker1': '92f9a860b13ccecd',
                                     'residual1': 'e3e1b1b93fb76074',
                                     'server0': 'f6f9283e55e63c0e',
                                     'server1': 'f6f9283e55e63c0e'},
 'onebit:bucket_size=64|randn|3001': {'encode': '4b50b7d6aa8f3264',
                                      'decode': 'f38a48b469469d19',
                                      'aggregate': 'b81a23a7845840bf',
                                      'worker0': 'ff9ec9e57971406e',
                                      'residual0': '45647260f5e83736',
                                      'worker1': '15b3653b761f7b07',
                                      'residual1': '298d63a16a3aec66',
                                      'server0': '93695eae86337e00',
                                      'server1': '5a59d6c5b8b91967'},
 'onebit:bucket_size=64|grid|150011': {'encode': 'c235032721cd196d',
                                       'decode': 'deff7f7302293446',
                                       'aggregate': 'd8c7678301ea1154',
                                       'worker0': '5a9ea33e528097bc',
                                       'residual0': 'd9441deef9863690',
                                       'worker1': '3e3d806fe9ada3d8',
                                       'residual1': 'bd8c491ba306a026',
                                       'server0': 'd849213c667f0790',
                                       'server1': '2437edae8ffda4e5'},
 'onebit:bucket_size=64|randn|150011': {'encode': '31678cd62fa2f28e',
                                        'decode': 'c0d18f0b7213ed00',
                                        'aggregate': '6c2280286ef72035',
                                        'worker0': 'e0a3bd64b2a8707a',
                                        'residual0': '78fa961d85f208b2',
                                        'worker1': '0f5f945f61d107c2',
                                        'residual1': '86a40d35a36972c4',
                                        'server0': 'bcc9b6d7e5aa2f5f',
                                        'server1': '3e863031b0d8f41e'},
 'onebit:bucket_size=64|tiny|3001': {'encode': '139c970bb925c6f7',
                                     'decode': '936b5864b815929e',
                                     'aggregate': '2ab3f19d413fc63b',
                                     'worker0': 'b760286f2ff0d30e',
                                     'residual0': 'c63347938b7ded82',
                                     'worker1': 'aba983e7e4187fcd',
                                     'residual1': '617b26f4d3889bd6',
                                     'server0': 'f6f9283e55e63c0e',
                                     'server1': 'f6f9283e55e63c0e'},
 'onebit:bucket_size=64|nonfinite': {'encode': '72dff4c218c86b32', 'decode': '872ecd8ab5cd285c'},
 'efsign|grid|3001': {'encode': 'dc75d5a757732203',
                      'decode': '70f2ac269f6ae5c0',
                      'aggregate': 'd63c849f0d2d2255',
                      'worker0': 'e08db8973dbdd477',
                      'residual0': 'd625563f15e29856',
                      'worker1': '495e7085f983909c',
                      'residual1': '7e196d9a9a738565',
                      'server0': '1f988d2afe1d4c4c',
                      'server1': 'c8379b06053c9dbd'},
 'efsign|randn|3001': {'encode': 'cbda7b7caf171881',
                       'decode': 'bff8ebb814e11e1f',
                       'aggregate': '67842e45f5708392',
                       'worker0': '6771474c3fa80675',
                       'residual0': '9dad43730ac7f7eb',
                       'worker1': '2f6212c97d6cb617',
                       'residual1': '9484c3beae8822e8',
                       'server0': '3daf0a173d6627a0',
                       'server1': '268902c6d6e72b09'},
 'efsign|grid|150011': {'encode': '85a51a054798b232',
                        'decode': '9d05de68561d3002',
                        'aggregate': '67da649e17207ed1',
                        'worker0': '073f37bfffc92c40',
                        'residual0': '3bc9c855cd0ed554',
                        'worker1': '79d888860205c496',
                        'residual1': 'a5da0fea5743d78a',
                        'server0': '499874aa8f4828f5',
                        'server1': '9a47d9da1b0e1692'},
 'efsign|randn|150011': {'encode': 'f32608b2f5ebb033',
                         'decode': '7c04af1fa39a9096',
                         'aggregate': '6de0608394c585d7',
                         'worker0': 'e7263aa6d3da8467',
                         'residual0': '8f9e0eedc9cb1c0b',
                         'worker1': '9a22a83495ad0c7c',
                         'residual1': 'b9a2ae70af6c010c',
                         'server0': '3f229fe619c84d4f',
                         'server1': 'e3b8773fded0c09b'},
 'efsign|tiny|3001': {'encode': 'edca7251bd18232f',
                      'decode': 'e23941948d3362c3',
                      'aggregate': '78a1b4eba0d5f2e4',
                      'worker0': 'e99835dd96d61784',
                      'residual0': 'e3383c90cf287a4f',
                      'worker1': '866a5e24a0bce20b',
                      'residual1': '83351c528c9c484f',
                      'server0': '0432a070c21ef4b6',
                      'server1': 'eaa3ec7335b63ad0'},
 'efsign|nonfinite': {'encode': '886ee1be72016976', 'decode': '1cb79ba1d1a2b763'},
 'signsgd|grid|3001': {'encode': 'dc75d5a757732203',
                       'decode': '70f2ac269f6ae5c0',
                       'aggregate': '0611a1de606df207',
                       'worker0': 'e08db8973dbdd477',
                       'worker1': '1d563bf2f31d1c63',
                       'server0': '1f988d2afe1d4c4c',
                       'server1': 'c8379b06053c9dbd'},
 'signsgd|randn|3001': {'encode': 'cbda7b7caf171881',
                        'decode': 'bff8ebb814e11e1f',
                        'aggregate': 'c97b976c1bf21812',
                        'worker0': '6771474c3fa80675',
                        'worker1': '0213c44f64f5dbc1',
                        'server0': '3daf0a173d6627a0',
                        'server1': '268902c6d6e72b09'},
 'signsgd|grid|150011': {'encode': '85a51a054798b232',
                         'decode': '9d05de68561d3002',
                         'aggregate': '1e4961f14a402173',
                         'worker0': '073f37bfffc92c40',
                         'worker1': '894754f7a188e332',
                         'server0': '499874aa8f4828f5',
                         'server1': '9a47d9da1b0e1692'},
 'signsgd|randn|150011': {'encode': 'f32608b2f5ebb033',
                          'decode': '7c04af1fa39a9096',
                          'aggregate': 'e9ca72d798f706cc',
                          'worker0': 'e7263aa6d3da8467',
                          'worker1': 'fcc29d409f7b2418',
                          'server0': '3f229fe619c84d4f',
                          'server1': 'e3b8773fded0c09b'},
 'signsgd|tiny|3001': {'encode': 'edca7251bd18232f',
                       'decode': 'e23941948d3362c3',
                       'aggregate': '5a82112dddf001f4',
                       'worker0': 'e99835dd96d61784',
                       'worker1': '0b985258e0bafe0e',
                       'server0': '0432a070c21ef4b6',
                       'server1': 'eaa3ec7335b63ad0'},
 'signsgd|nonfinite': {'encode': '886ee1be72016976', 'decode': '1cb79ba1d1a2b763'},
 'signsgd:scaled=false|grid|3001': {'encode': '1fb4fb54693477e1',
                                    'decode': '93ea0c5a7297f905',
                                    'aggregate': '5496239d17d1eb04',
                                    'worker0': 'ec63935fa58c5b94',
                                    'worker1': '69d4f3918e29d240',
                                    'server0': '55bae4067cafe908',
                                    'server1': '55bae4067cafe908'},
 'signsgd:scaled=false|randn|3001': {'encode': 'da72080adffff906',
                                     'decode': '7161dbafe5e12b7e',
                                     'aggregate': 'eea7bd338f05fd5a',
                                     'worker0': '257e639254fce823',
                                     'worker1': '6f15bb36132286f9',
                                     'server0': '67f25314af550666',
                                     'server1': '67f25314af550666'},
 'signsgd:scaled=false|grid|150011': {'encode': '68d790d55008dd8a',
                                      'decode': '95537af430c7e398',
                                      'aggregate': 'b02aa774f1a1685b',
                                      'worker0': '9b96d51f55402051',
                                      'worker1': '71819f4de5727a6e',
                                      'server0': '471859e4ef38242a',
                                      'server1': '471859e4ef38242a'},
 'signsgd:scaled=false|randn|150011': {'encode': '2517a3aa30ed60bf',
                                       'decode': '74c77f28df451250',
                                       'aggregate': '20f8a11ec9a41bd5',
                                       'worker0': 'c10f2576924e8267',
                                       'worker1': 'af505658fcd4427e',
                                       'server0': 'f0e1eb1e8b561356',
                                       'server1': 'f0e1eb1e8b561356'},
 'signsgd:scaled=false|tiny|3001': {'encode': '1fb4fb54693477e1',
                                    'decode': '93ea0c5a7297f905',
                                    'aggregate': '5496239d17d1eb04',
                                    'worker0': 'ec63935fa58c5b94',
                                    'worker1': '69d4f3918e29d240',
                                    'server0': '55bae4067cafe908',
                                    'server1': '55bae4067cafe908'},
 'signsgd:scaled=false|nonfinite': {'encode': '886ee1be72016976', 'decode': '1cb79ba1d1a2b763'},
 'topk:ratio=0.01|grid|3001': {'encode': 'aaba3b2cfe9640ba',
                               'decode': 'f5eefc80e1cef0b9',
                               'aggregate': 'f6808ba7b6d5669e',
                               'worker0': 'eeb657468d7a2b83',
                               'residual0': 'a13faa0c869eea4a',
                               'worker1': 'a4178cff302fdc38',
                               'residual1': 'a67480a449003744',
                               'server0': 'b5fdbd33c4101a19',
                               'server1': '3fd940322230f450'},
 'topk:ratio=0.01|randn|3001': {'encode': 'b81f6872b8848324',
                                'decode': '62a1582875a2f14c',
                                'aggregate': 'e6b312db14b2d093',
                                'worker0': '7d28540bcb2c9712',
                                'residual0': 'eaa87565a04e442b',
                                'worker1': '347a7400ad05d4e5',
                                'residual1': 'c906086c6a2c692e',
                                'server0': '097630c1c99015de',
                                'server1': '233ab8c03fd89c7c'},
 'topk:ratio=0.01|grid|150011': {'encode': '6df62886e51d192c',
                                 'decode': '971621cc2d2345e2',
                                 'aggregate': '3e453d58b65e20ca',
                                 'worker0': 'f1bff7b68a900983',
                                 'residual0': '2ea5477474df371b',
                                 'worker1': '7fca30945cd143da',
                                 'residual1': 'f059f7e6659dc8dc',
                                 'server0': '1dcfed35f5ec3ed1',
                                 'server1': '16504596f1043c26'},
 'topk:ratio=0.01|randn|150011': {'encode': '8782763c98e2922f',
                                  'decode': '6d71371b640a8d2a',
                                  'aggregate': '9133995815ca4cd9',
                                  'worker0': '254191450bb1f8cc',
                                  'residual0': '64d12f5278825497',
                                  'worker1': 'a53e7ad0dbb91a3c',
                                  'residual1': 'b8fb6b14d745747a',
                                  'server0': '973c5a076b2f7709',
                                  'server1': '9ac52af1cec3dd62'},
 'topk:ratio=0.01|tiny|3001': {'encode': '9afcb0320bd80a1b',
                               'decode': '98686edb50a135cd',
                               'aggregate': 'e8bbd9edf88da294',
                               'worker0': 'de26ad3f70bfed05',
                               'residual0': '1b6ad6010a036cf9',
                               'worker1': 'fcee0db23648cb1f',
                               'residual1': 'd7b589ca193f0654',
                               'server0': 'f7a79133591de95b',
                               'server1': 'fb5275696b45b474'},
 'topk:ratio=0.01|nonfinite': {'encode': 'd72578cd6b8af4c0', 'decode': '82dc4d2cd5cd717c'},
 'doublesqueeze:codec=onebit|grid|3001': {'encode': 'e6bcee9723b56e30',
                                          'decode': '9d28a8508508d600',
                                          'aggregate': '1ba87b743c67c453',
                                          'worker0': '91d83a704ed6ded0',
                                          'worker1': 'de0a3a61b872799c',
                                          'server0': 'a30e29ef738e6dd4',
                                          'server1': 'a30e29ef738e6dd4',
                                          'server_residual': 'ad7facb2586fc6e9'},
 'doublesqueeze:codec=onebit|randn|3001': {'encode': '0687ecb0a3874af0',
                                           'decode': '3990f12d429a32df',
                                           'aggregate': 'f8c80b297a956d88',
                                           'worker0': '0d94d556783655f4',
                                           'worker1': '4a34be637c61510f',
                                           'server0': '1925ec1578f1c9a8',
                                           'server1': '0c86811d6b4be925',
                                           'server_residual': 'de1c3e573209c8bc'},
 'doublesqueeze:codec=onebit|grid|150011': {'encode': '6a6011485d0f7f13',
                                            'decode': 'a2ece7525e4d8d9b',
                                            'aggregate': '009cf873c9574cfd',
                                            'worker0': '933cbcc9adc71375',
                                            'worker1': '6abda8826f1d33c7',
                                            'server0': 'e4460d9d51c0c9a7',
                                            'server1': '546cdccfe5469b43',
                                            'server_residual': '359ac4a8710eb818'},
 'doublesqueeze:codec=onebit|randn|150011': {'encode': '029ebdfb889e477c',
                                             'decode': '89779b7e98f10b32',
                                             'aggregate': '4107acfc98ce3904',
                                             'worker0': '772a4d408b44679f',
                                             'worker1': '28bc7f2298ddf22b',
                                             'server0': '76cde116681281bd',
                                             'server1': '6ce3cc8ff93181df',
                                             'server_residual': '85c7d099b86c406e'},
 'doublesqueeze:codec=onebit|tiny|3001': {'encode': 'b07c5018904fd5ce',
                                          'decode': 'e26ff70afacaf824',
                                          'aggregate': '39f3d8c6f670b7a1',
                                          'worker0': 'c09b66c47ce29cf0',
                                          'worker1': '9f1e203acc93d91c',
                                          'server0': 'a30e29ef738e6dd4',
                                          'server1': 'a30e29ef738e6dd4',
                                          'server_residual': 'ad7facb2586fc6e9'},
 'doublesqueeze:codec=onebit|nonfinite': {'encode': 'df0b2b4a45cd57f8', 'decode': '4776cda47702ad8a'},
 'doublesqueeze:codec=qsgd,bits=4|grid|3001': {'encode': '9fff60643b05b6f9',
                                               'decode': 'cdeeaddf24b66dfa',
                                               'encode_noise': '164ec7cd5a745b56',
                                               'aggregate': '6e7b7cf76a7ce8e5',
                                               'worker0': '4b0742a6c117e047',
                                               'worker1': '7d54e68f3fc6b3b9',
                                               'server0': '38f67ac7617a8595',
                                               'server1': '38f67ac7617a8595',
                                               'server_residual': 'ad7facb2586fc6e9'},
 'doublesqueeze:codec=qsgd,bits=4|randn|3001': {'encode': 'de484a160d56355b',
                                                'decode': 'c8f90c4beed0a370',
                                                'encode_noise': 'e604621f4927583c',
                                                'aggregate': '2ea14855b41fbf0b',
                                                'worker0': '0b05b51b0d6ffae3',
                                                'worker1': '08f19798e7e07dd2',
                                                'server0': '189c1b4fc0d925fc',
                                                'server1': '46fa03078866552d',
                                                'server_residual': '937c9b3a33409ac7'},
 'doublesqueeze:codec=qsgd,bits=4|grid|150011': {'encode': '290e83e0e5f96338',
                                                 'decode': 'fadd9004122872be',
                                                 'encode_noise': '4174abe67a52df9b',
                                                 'aggregate': '9ae85bf37435ee0c',
                                                 'worker0': '568e436ca2175ea6',
                                                 'worker1': '41b709b4b14eb131',
                                                 'server0': '522c5284de071e37',
                                                 'server1': '6759bbee54bb862d',
                                                 'server_residual': '51ba635f6e8c46dc'},
 'doublesqueeze:codec=qsgd,bits=4|randn|150011': {'encode': '3f79cd168bc0408f',
                                                  'decode': 'd905cb53a4c869bc',
                                                  'encode_noise': 'b3d299962c751a26',
                                                  'aggregate': '8435a7dbb1d7b0be',
                                                  'worker0': '56ed3773de328e49',
                                                  'worker1': 'e8432512a0162b1a',
                                                  'server0': '42f7c83c16f5edee',
                                                  'server1': '9cbaf795bde31300',
                                                  'server_residual': 'e8b0e0b00e3b1a02'},
 'doublesqueeze:codec=qsgd,bits=4|tiny|3001': {'encode': '484269cb1cf6900a',
                                               'decode': 'fc4ed40e1b3b8182',
                                               'encode_noise': '484269cb1cf6900a',
                                               'aggregate': '9863556284c5e4ff',
                                               'worker0': '6a655be63ab2e55e',
                                               'worker1': 'fcd074cff3718bbe',
                                               'server0': '38f67ac7617a8595',
                                               'server1': '38f67ac7617a8595',
                                               'server_residual': 'ad7facb2586fc6e9'},
 'doublesqueeze:codec=qsgd,bits=4|nonfinite': {'encode': '02c3ebeae4ca8564', 'decode': '728f0dadc92b908c'},
 'doublesqueeze:codec=efsign|grid|3001': {'encode': 'dc75d5a757732203',
                                          'decode': '70f2ac269f6ae5c0',
                                          'aggregate': 'd63c849f0d2d2255',
                                          'worker0': 'e08db8973dbdd477',
                                          'worker1': '495e7085f983909c',
                                          'server0': '1f988d2afe1d4c4c',
                                          'server1': 'c185cce9e1197528',
                                          'server_residual': 'c6694778ff013843'},
 'doublesqueeze:codec=efsign|randn|3001': {'encode': 'cbda7b7caf171881',
                                           'decode': 'bff8ebb814e11e1f',
                                           'aggregate': '67842e45f5708392',
                                           'worker0': '6771474c3fa80675',
                                           'worker1': '2f6212c97d6cb617',
                                           'server0': '3daf0a173d6627a0',
                                           'server1': 'ba8281417d9087db',
                                           'server_residual': 'e3550ab5313b86ff'},
 'doublesqueeze:codec=efsign|grid|150011': {'encode': '85a51a054798b232',
                                            'decode': '9d05de68561d3002',
                                            'aggregate': '67da649e17207ed1',
                                            'worker0': '073f37bfffc92c40',
                                            'worker1': '79d888860205c496',
                                            'server0': '499874aa8f4828f5',
                                            'server1': '81c1fee00025c07b',
                                            'server_residual': '6922e7ef0b224190'},
 'doublesqueeze:codec=efsign|randn|150011': {'encode': 'f32608b2f5ebb033',
                                             'decode': '7c04af1fa39a9096',
                                             'aggregate': '6de0608394c585d7',
                                             'worker0': 'e7263aa6d3da8467',
                                             'worker1': '9a22a83495ad0c7c',
                                             'server0': '3f229fe619c84d4f',
                                             'server1': 'ca9dfda864f4ad7c',
                                             'server_residual': 'd0aff48e789352b0'},
 'doublesqueeze:codec=efsign|tiny|3001': {'encode': 'edca7251bd18232f',
                                          'decode': 'e23941948d3362c3',
                                          'aggregate': '78a1b4eba0d5f2e4',
                                          'worker0': 'e99835dd96d61784',
                                          'worker1': '866a5e24a0bce20b',
                                          'server0': '0432a070c21ef4b6',
                                          'server1': 'bf8663c80db6fb99',
                                          'server_residual': 'df44774f8c25adf7'},
 'doublesqueeze:codec=efsign|nonfinite': {'encode': '886ee1be72016976', 'decode': '1cb79ba1d1a2b763'}}

# The native kernels' digests where native_may_differ allows them to differ from PINNED.
NATIVE_PINNED: dict = {'qsgd:bits=2,bucket_size=128|grid|3001': {'encode': '4ebb21b4fa254b40',
                                           'decode': 'f2b0014fa0f46cae',
                                           'aggregate': 'f28b8dd4a8c078da',
                                           'worker0': 'd7795b40a217b37b',
                                           'worker1': 'b0b801dde78a3888'},
 'qsgd:bits=2,bucket_size=128|randn|3001': {'encode': '6beb34982b35fb1e',
                                            'decode': 'cd9cae3b7557a52b',
                                            'aggregate': '315138bb17b96572',
                                            'worker0': '3ea6924c7dfb8bde',
                                            'worker1': '692d31aa3b610ce2',
                                            'server0': 'ec91063943e0064f',
                                            'server1': '80be8fd28820e48c'},
 'qsgd:bits=2,bucket_size=128|grid|150011': {'encode': 'de77e3b1a7dc4b20',
                                             'decode': 'bdbbc915b0d827b1',
                                             'aggregate': '37239d2dbf57298e',
                                             'worker0': '82c8e52f1fcb48af',
                                             'worker1': '264b5b07cb8d24c6',
                                             'server0': 'bb75ec43a7d8e262',
                                             'server1': '16166d29b356ab67'},
 'qsgd:bits=2,bucket_size=128|randn|150011': {'encode': 'cb05a563e2804168',
                                              'decode': 'f7175abc17280fe5',
                                              'aggregate': '06a3899f3e2dff7e',
                                              'worker0': '39e112e604714c12',
                                              'worker1': '8a7d443e2a246f20',
                                              'server0': 'd7ccc236211a280c',
                                              'server1': 'd42011749069ec26'},
 'qsgd:bits=2,bucket_size=128|nonfinite': {'encode': '4bf4dc5480ef8062', 'decode': '97e37c4d8bd3362d'},
 'qsgd:bits=4|grid|3001': {'encode': 'd5753bc7cb3f5693',
                           'decode': '72805600a0222354',
                           'aggregate': '910bce5057d65ef9',
                           'worker0': '13b5bf8ff8e5546e',
                           'worker1': '89535fc944464e53'},
 'qsgd:bits=4|randn|3001': {'encode': '12dd49ff33c816f9',
                            'decode': '8c28f05f5de5342f',
                            'aggregate': '1fb1aa00760496f6',
                            'worker0': 'aea6730216871ad4',
                            'worker1': 'b57bab1d946cd511',
                            'server0': '4a6540a33bb01ddb',
                            'server1': 'cc9ad43aab3a176b'},
 'qsgd:bits=4|grid|150011': {'encode': 'f33cdeca22831e55',
                             'decode': '11badd77158759a4',
                             'aggregate': '4e5b2f6ea918b550',
                             'worker0': 'f70986e72e07c790',
                             'worker1': '9167548dcec56545',
                             'server0': '8cd2356cc94c4b78',
                             'server1': '1c0f3c0c4b5ac97e'},
 'qsgd:bits=4|randn|150011': {'encode': '76a2e07128f44039',
                              'decode': 'b2b4f4d693d668b7',
                              'aggregate': '4e83e0d14652bce9',
                              'worker0': 'f450475c6f1dcc4d',
                              'worker1': 'bb7598cc3afa954a',
                              'server0': '6cf307c53edcd6d2',
                              'server1': 'f9e1d3cf0317f4ba'},
 'qsgd:bits=4|nonfinite': {'encode': 'd07a7f8654626168', 'decode': 'b8b5e7907093ac9a'},
 'qsgd:bits=8|grid|3001': {'encode': 'd0b25094d2c9043e',
                           'decode': 'c2e5bd0a6fb0a2b1',
                           'aggregate': '673949f79610ca84',
                           'worker0': '0217b49788da6afe',
                           'worker1': 'ea5559a5885ff00c'},
 'qsgd:bits=8|randn|3001': {'encode': '1883bff87e04b6f5',
                            'decode': 'e0d2294ff202559c',
                            'aggregate': '4fd221b156992d50',
                            'worker0': '3b6511faac6790de',
                            'worker1': '91843047999ad4d1',
                            'server0': '616a6174e212622e',
                            'server1': 'e4b8d4e31f0f8893'},
 'qsgd:bits=8|grid|150011': {'encode': '5d2aaf9c66285fe6',
                             'decode': '2bc7f8e900e5b3ba',
                             'aggregate': '7a2c08a192fb573d',
                             'worker0': 'd1ca5ebef2d87ec3',
                             'worker1': '71daf4f74de3f6b6',
                             'server0': '2fb45a0578dc22b1',
                             'server1': 'f1ce8f1a6f4b1f6a'},
 'qsgd:bits=8|randn|150011': {'encode': '5f1b83612897043d',
                              'decode': '4abd85eadeee63cd',
                              'aggregate': 'ca4ce685d0c6dc69',
                              'worker0': 'f049e03039aa2c68',
                              'worker1': 'a3e8b0c52b52aba1',
                              'server0': '9b9bede00f19f066',
                              'server1': 'b82a1b1f97d00750'},
 'qsgd:bits=8|nonfinite': {'encode': 'e30f536bc4b4d2ed', 'decode': '16307a09b7519991'},
 'qsgd:bits=4,norm=l2|grid|3001': {'encode': '69bdaaf73fba0399',
                                   'decode': '46f05d263e850982',
                                   'aggregate': '2ccb33c57d8c4bcc',
                                   'worker0': '5cb288587e3c5bb2',
                                   'worker1': '01974bebf29edaf3'},
 'qsgd:bits=4,norm=l2|randn|3001': {'encode': '6f880ccd324772a7',
                                    'decode': 'da2b13fa0cabe4af',
                                    'encode_noise': 'f08ea4712032e915',
                                    'aggregate': '335db4503c14c5b4',
                                    'worker0': '9e08e385a1edfc36',
                                    'worker1': '29017d5fc0536e21',
                                    'server0': '2d296c70b17ad075',
                                    'server1': '61364d9936421325'},
 'qsgd:bits=4,norm=l2|grid|150011': {'encode': 'ed2afe655c5d3285',
                                     'decode': '9cad008b6e5a32f2',
                                     'aggregate': '6fdbee3ea7d81439',
                                     'worker0': '8c563a6d636c829b',
                                     'worker1': '253b5f14165299ca',
                                     'server0': '21a13ae278228e10',
                                     'server1': '96b3c8ae6f5a9022'},
 'qsgd:bits=4,norm=l2|randn|150011': {'encode': 'fdb3f8a5ab59d03c',
                                      'decode': '2b6d99b215da3419',
                                      'encode_noise': '2edd364e2c7ae124',
                                      'aggregate': '6a30b4227568c864',
                                      'worker0': 'ef5ee43e587c888f',
                                      'worker1': '065ed0cf449f89a5',
                                      'server0': 'fe23ca6e77854b4b',
                                      'server1': 'f97a4d4ca8b4d000'},
 'qsgd:bits=4,norm=l2|tiny|3001': {'encode': '48920b4ed1a5b581',
                                   'decode': 'd4a38295f54be941',
                                   'encode_noise': '48920b4ed1a5b581',
                                   'aggregate': '8b6f5ab17851693e',
                                   'worker0': '56f01444a4526e0c',
                                   'worker1': '9212aa35f13c5c02'},
 'qsgd:bits=4,norm=l2|nonfinite': {'encode': '3867920cd93fe546', 'decode': 'e0150a5fe08f5b00'},
 'qsgd:bits=4,bucket_size=100|grid|3001': {'encode': '333bee64fc3318ec',
                                           'decode': '01e7691b6bd5761f',
                                           'aggregate': '81dcd9b90cd8a5f5',
                                           'worker0': '180456c216e34a7b',
                                           'worker1': 'b812e08bb7ce4294',
                                           'server0': '1cf0639c06e7424b',
                                           'server1': 'a30725e939788e2f'},
 'qsgd:bits=4,bucket_size=100|randn|3001': {'encode': 'e531ff961aa48d57',
                                            'decode': '19a38acf08d5452a',
                                            'aggregate': '218c22deab364ea4',
                                            'worker0': '312b736ae8b24d8a',
                                            'worker1': '4a3142d5040843a5',
                                            'server0': 'c7d646a148bc3559',
                                            'server1': 'bc3e87c51213ab1f'},
 'qsgd:bits=4,bucket_size=100|grid|150011': {'encode': '60324be5287a8996',
                                             'decode': 'c5b01c182314eb05',
                                             'aggregate': '4d5890fc6bcd613b',
                                             'worker0': '47a5dc8b79ff7d74',
                                             'worker1': '9639bf813b7b521c',
                                             'server0': 'e017677631849075',
                                             'server1': '70dab6d3154f29b6'},
 'qsgd:bits=4,bucket_size=100|randn|150011': {'encode': 'e3e39580cde92b61',
                                              'decode': '8165764eef64100c',
                                              'aggregate': 'b4059138505fcd50',
                                              'worker0': '2f23a7500e12c80d',
                                              'worker1': '695351e1799b3b17',
                                              'server0': '2dba6ab23e983615',
                                              'server1': 'd6c471ff99ad3d87'},
 'qsgd:bits=4,bucket_size=100|nonfinite': {'encode': '670d364f991e8af0', 'decode': '185382f3f06a8132'},
 'terngrad|grid|3001': {'encode': 'e61bdab7fb0550ad',
                        'decode': 'd268178d10ef2b41',
                        'aggregate': '5a7bae8d5268401e',
                        'worker0': '3359e79093e9b1d4',
                        'worker1': '2db762610496be9d'},
 'terngrad|randn|3001': {'encode': 'a2c13f3164745cc6',
                         'decode': '1bc1ea92a8b151dd',
                         'aggregate': '6345ba65a5645906',
                         'worker0': '7f1366ade2c486d9',
                         'worker1': 'eb3a336d8066b237',
                         'server0': '84cc454836048eda',
                         'server1': 'e5510081a4d1b988'},
 'terngrad|grid|150011': {'encode': '65b12c6eade23da3',
                          'decode': '6d3de65cf4a9d371',
                          'aggregate': '197418b3c6d43ab4',
                          'worker0': '561bc641ec7e12db',
                          'worker1': 'e43fc1c5a34bf98b',
                          'server0': '519a6ba1b11ecdd6',
                          'server1': 'c6ad01ed308eae63'},
 'terngrad|randn|150011': {'encode': '082f8bc206f29c03',
                           'decode': 'd4fb36f541686418',
                           'aggregate': 'fbe5ab8b144485f0',
                           'worker0': 'f0a4dbdd5a77f322',
                           'worker1': 'a623653857677773',
                           'server0': 'a3a0ec80ca700330',
                           'server1': 'cd63de00e409b845'},
 'terngrad|tiny|3001': {'encode': '7ff04e23f3606074',
                        'decode': 'ca6c971cf00c4a8e',
                        'aggregate': '89da51b5f5d4f20f',
                        'worker0': '72a4432e36272ab2',
                        'worker1': '0f4405f6dde069f2'},
 'terngrad|nonfinite': {'encode': '7126a33e97f811d6'},
 'terngrad:packing=2bit|grid|3001': {'encode': 'c5332317a364872e',
                                     'decode': 'd268178d10ef2b41',
                                     'aggregate': '5a7bae8d5268401e',
                                     'worker0': '5a1dcd21758d9b89',
                                     'worker1': 'd7c7a2112a26c1cc'},
 'terngrad:packing=2bit|randn|3001': {'encode': '341f27800595494b',
                                      'decode': '1bc1ea92a8b151dd',
                                      'aggregate': '6345ba65a5645906',
                                      'worker0': 'd54f2e77f86ede0a',
                                      'worker1': '673ecc9cd6d278ba',
                                      'server0': '0d43670a3cb70bdf',
                                      'server1': 'cc004d2a7f67dba2'},
 'terngrad:packing=2bit|grid|150011': {'encode': '3ac6637d84c376c4',
                                       'decode': '6d3de65cf4a9d371',
                                       'aggregate': '197418b3c6d43ab4',
                                       'worker0': 'b0792fa705509159',
                                       'worker1': 'e98d8fc90a693bc7',
                                       'server0': 'bba5df4628413c30',
                                       'server1': 'cf9608e3d630d763'},
 'terngrad:packing=2bit|randn|150011': {'encode': '1d080361ba348d7d',
                                        'decode': 'd4fb36f541686418',
                                        'aggregate': 'fbe5ab8b144485f0',
                                        'worker0': '7f63199196c2f3b1',
                                        'worker1': 'a83ac427ce930887',
                                        'server0': '230f0a48e3a329b1',
                                        'server1': 'f1969d743e4086f0'},
 'terngrad:packing=2bit|tiny|3001': {'encode': '208d242ee63e7eab',
                                     'decode': 'ca6c971cf00c4a8e',
                                     'aggregate': '89da51b5f5d4f20f',
                                     'worker0': '611f7ee4ef33b042',
                                     'worker1': '0fdd209ec1623d42'},
 'terngrad:packing=2bit|nonfinite': {'encode': '227012a8a546253c'},
 'terngrad:clip=none|grid|3001': {'encode': 'e61bdab7fb0550ad',
                                  'decode': 'd268178d10ef2b41',
                                  'aggregate': '5a7bae8d5268401e',
                                  'worker0': '3359e79093e9b1d4',
                                  'worker1': '2db762610496be9d'},
 'terngrad:clip=none|randn|3001': {'encode': 'a2c13f3164745cc6',
                                   'decode': '1bc1ea92a8b151dd',
                                   'aggregate': '6345ba65a5645906',
                                   'worker0': '7f1366ade2c486d9',
                                   'worker1': 'eb3a336d8066b237',
                                   'server0': '84cc454836048eda',
                                   'server1': 'e5510081a4d1b988'},
 'terngrad:clip=none|grid|150011': {'encode': '65b12c6eade23da3',
                                    'decode': '6d3de65cf4a9d371',
                                    'aggregate': '197418b3c6d43ab4',
                                    'worker0': '561bc641ec7e12db',
                                    'worker1': 'e43fc1c5a34bf98b',
                                    'server0': '519a6ba1b11ecdd6',
                                    'server1': 'c6ad01ed308eae63'},
 'terngrad:clip=none|randn|150011': {'encode': '082f8bc206f29c03',
                                     'decode': 'd4fb36f541686418',
                                     'aggregate': 'fbe5ab8b144485f0',
                                     'worker0': 'f0a4dbdd5a77f322',
                                     'worker1': 'a623653857677773',
                                     'server0': 'a3a0ec80ca700330',
                                     'server1': 'cd63de00e409b845'},
 'terngrad:clip=none|tiny|3001': {'encode': '7ff04e23f3606074',
                                  'decode': 'ca6c971cf00c4a8e',
                                  'aggregate': '89da51b5f5d4f20f',
                                  'worker0': '72a4432e36272ab2',
                                  'worker1': '0f4405f6dde069f2'},
 'terngrad:clip=none|nonfinite': {'encode': '7126a33e97f811d6'},
 'onebit|grid|3001': {'worker1': 'af7cda881b87fdb1', 'residual1': 'e1c39dea5e218c0b'},
 'onebit|randn|3001': {'encode': 'fcf40462bdb673e3',
                       'decode': 'a07077c016feb219',
                       'aggregate': 'f954e490b439ad50',
                       'worker0': '265720662e7bb401',
                       'residual0': 'd373af4a1c31974b',
                       'worker1': 'b4e2fe4e88c5ec45',
                       'residual1': '987b760617b3600d',
                       'server0': '864d46cb8fdaad8a',
                       'server1': '09663b7b6bbcb0b3'},
 'onebit|grid|150011': {'worker1': 'd9730cde03c4baa2', 'residual1': 'b4fac17ae151cfa9'},
 'onebit|randn|150011': {'encode': 'e0283be160ba2eac',
                         'decode': '9f7c04981d7ec8b4',
                         'aggregate': '6cddbc28b504ea3a',
                         'worker0': '0ec4d20c429e9c2f',
                         'residual0': '4ec7ea31b2805bd4',
                         'worker1': '29b121111fd25b9f',
                         'residual1': 'da5c2e43cb99cdaa',
                         'server0': 'b23c4c82bec78285',
                         'server1': '6430bacdddad273f'},
 'onebit:bucket_size=64|grid|3001': {'worker1': '32663cfe43f91c96', 'residual1': '0a8d7f87ef1ad098'},
 'onebit:bucket_size=64|randn|3001': {'encode': 'b6115044b967f610',
                                      'decode': '6adfc26db49d1de5',
                                      'aggregate': '3a00052fc795fba9',
                                      'worker0': '1a00ddbf852ec878',
                                      'residual0': '2cb73a62c28306b9',
                                      'worker1': '6b397e9dbf95f68e',
                                      'residual1': 'dc56491d8dc4419f',
                                      'server0': '7939806964a3528b',
                                      'server1': '3f92c9acf05e1689'},
 'onebit:bucket_size=64|grid|150011': {'worker1': '86db4c6bcc3ad223', 'residual1': '03e276aa8030bd49'},
 'onebit:bucket_size=64|randn|150011': {'encode': 'f859965397e84535',
                                        'decode': 'caab0350989f47dc',
                                        'aggregate': 'e1c289c5a00f1de0',
                                        'worker0': '64975cea516f450e',
                                        'residual0': '2ba2b1d1cfff7a43',
                                        'worker1': '9b98cfda8179a156',
                                        'residual1': 'e8a2127f20dcf803',
                                        'server0': 'cfb2e61a37307823',
                                        'server1': '0934eae316aebaa3'},
 'efsign|grid|3001': {'worker1': '67ed81e620609ef0', 'residual1': 'a6bd7804500fd3b1'},
 'efsign|randn|3001': {'aggregate': '20bc0b4339dbe1d6',
                       'worker1': 'e2c3164db772c9e8',
                       'residual1': '03a9d86fcde69253'},
 'efsign|grid|150011': {'worker1': 'c7311cfe7935b2f4', 'residual1': '239ecbc7e5f653a7'},
 'efsign|randn|150011': {'encode': '9ea9a38fc756b804',
                         'decode': '92fe46babe12688a',
                         'aggregate': 'eff024ad2cb7de3e',
                         'worker0': '22f4ad01b839e07d',
                         'residual0': '3200f06eefdcb79b',
                         'worker1': 'f0ddc1633a30548c',
                         'residual1': '2e5039c668b872c0'},
 'doublesqueeze:codec=onebit|grid|3001': {'worker1': 'af7cda881b87fdb1'},
 'doublesqueeze:codec=onebit|randn|3001': {'encode': 'fcf40462bdb673e3',
                                           'decode': 'a07077c016feb219',
                                           'aggregate': 'f954e490b439ad50',
                                           'worker0': '265720662e7bb401',
                                           'worker1': 'b4e2fe4e88c5ec45',
                                           'server0': '864d46cb8fdaad8a',
                                           'server1': 'f9ebfd98b8a0a5b7',
                                           'server_residual': 'df6107910d9abfea'},
 'doublesqueeze:codec=onebit|grid|150011': {'worker1': 'd9730cde03c4baa2',
                                            'server1': '12c39754154652be',
                                            'server_residual': 'bcfdeb0e4cc8b8c2'},
 'doublesqueeze:codec=onebit|randn|150011': {'encode': 'e0283be160ba2eac',
                                             'decode': '9f7c04981d7ec8b4',
                                             'aggregate': '6cddbc28b504ea3a',
                                             'worker0': '0ec4d20c429e9c2f',
                                             'worker1': '29b121111fd25b9f',
                                             'server0': 'b23c4c82bec78285',
                                             'server1': 'b795817dc7ba3832',
                                             'server_residual': 'a75a3591d0852b8a'},
 'doublesqueeze:codec=qsgd,bits=4|grid|3001': {'encode': 'd5753bc7cb3f5693',
                                               'decode': '72805600a0222354',
                                               'aggregate': '910bce5057d65ef9',
                                               'worker0': '13b5bf8ff8e5546e',
                                               'worker1': '2927f10d06d2660f'},
 'doublesqueeze:codec=qsgd,bits=4|randn|3001': {'encode': '12dd49ff33c816f9',
                                                'decode': '8c28f05f5de5342f',
                                                'aggregate': '1fb1aa00760496f6',
                                                'worker0': 'aea6730216871ad4',
                                                'worker1': '3163b565b6e4cab3',
                                                'server0': '4a6540a33bb01ddb',
                                                'server1': '010d53d26a7bf304',
                                                'server_residual': '3f32b73153f3d4d2'},
 'doublesqueeze:codec=qsgd,bits=4|grid|150011': {'encode': 'f33cdeca22831e55',
                                                 'decode': '11badd77158759a4',
                                                 'aggregate': '4e5b2f6ea918b550',
                                                 'worker0': 'f70986e72e07c790',
                                                 'worker1': '114412427c4996a3',
                                                 'server0': '8cd2356cc94c4b78',
                                                 'server1': '48af151563b64d9e',
                                                 'server_residual': '83ac11c999de987f'},
 'doublesqueeze:codec=qsgd,bits=4|randn|150011': {'encode': '76a2e07128f44039',
                                                  'decode': 'b2b4f4d693d668b7',
                                                  'aggregate': '4e83e0d14652bce9',
                                                  'worker0': 'f450475c6f1dcc4d',
                                                  'worker1': 'd188915576f7cb32',
                                                  'server0': '6cf307c53edcd6d2',
                                                  'server1': '4f0203d0ae474ce5',
                                                  'server_residual': '1d00c56347bb6f91'},
 'doublesqueeze:codec=qsgd,bits=4|nonfinite': {'encode': 'd07a7f8654626168', 'decode': 'b8b5e7907093ac9a'},
 'doublesqueeze:codec=efsign|grid|3001': {'worker1': '67ed81e620609ef0',
                                          'server1': '47787da28cb0a143',
                                          'server_residual': '378240171d1ee09b'},
 'doublesqueeze:codec=efsign|randn|3001': {'aggregate': '20bc0b4339dbe1d6', 'worker1': 'e2c3164db772c9e8'},
 'doublesqueeze:codec=efsign|grid|150011': {'worker1': 'c7311cfe7935b2f4'},
 'doublesqueeze:codec=efsign|randn|150011': {'encode': '9ea9a38fc756b804',
                                             'decode': '92fe46babe12688a',
                                             'aggregate': 'eff024ad2cb7de3e',
                                             'worker0': '22f4ad01b839e07d',
                                             'worker1': 'f0ddc1633a30548c'}}

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
    if codec.name in ("onebit_quantizer", "scaled_sign") or l2:  # sum-based scales
        if data == "randn" or (data == "grid" and key in LATER_STEPS):
            return True
        if l2 and data == "tiny":
            return True
    return False


def _child(native: bool) -> dict:
    env = dict(os.environ, ATEN_CPU_CAPABILITY="avx2", OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               HVD_COMPRESS_THREADS="1",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, __file__, "--json", "--native", str(int(native))],
                          capture_output=True, text=True, env=env, cwd=str(REPO), timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout)


def _skip_unless_avx2():
    if platform.machine() not in ("x86_64", "AMD64") or not _has_avx2():
        pytest.skip("digests are pinned for x86-64 AVX2 kernels (ATEN_CPU_CAPABILITY=avx2); "
                    f"this machine is {platform.machine()} without AVX2")


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


def main():
    torch.set_num_threads(1)
    native = "1"
    if "--native" in sys.argv:
        native = sys.argv[sys.argv.index("--native") + 1]
    os.environ["HVD_COMPRESS_NATIVE"] = native
    out = all_digests()
    if "--json" in sys.argv:
        print(json.dumps(out))
        return
    import pprint
    if native == "0":
        print("PINNED = ", end="")
        pprint.pprint(out, width=110, sort_dicts=False)
    else:  # only what differs from the plain pins
        diff = {case: {k: v for k, v in keys.items() if PINNED.get(case, {}).get(k) != v}
                for case, keys in out.items()}
        print("NATIVE_PINNED = ", end="")
        pprint.pprint({c: d for c, d in diff.items() if d}, width=110, sort_dicts=False)


if __name__ == "__main__":
    main()
