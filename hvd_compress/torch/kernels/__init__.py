"""Triton kernels for the torch codecs, run where the codec's plan (:mod:`.backend`) says so.

One module per codec family (``qsgd``, ``terngrad``, ``onebit``, ``sign``, ``topk``, ``lattice``),
imported lazily: importing this package does not import Triton. A codec writes::

    path = self.plan.path(x)            # chosen when the codec was built
    if path == "triton":
        return kernels.qsgd_encode(x, self.bits, self.bucket_size, self.norm, generator, noise)
    if path == "native":
        ...                             # the C kernels, then the plain torch path

The functions decide nothing about the backend; the few that return ``None`` do so for inputs
their kernel does not take (a dtype, a non-contiguous output), and the codec then takes the plain
path.

Same wire format as the C kernels and the plain path: given the same uniforms (``noise=``) the
payload is byte-identical. Without ``noise`` the stochastic codecs draw their uniforms in the
kernel (``tl.rand``, Philox, counter-based) from a seed drawn from the codec's generator, itself
seeded by (seed, rank, step, tensor name, chunk): deterministic, so runs and checkpoints are
bit-exact, but a different stream from the CPU kernels' SplitMix64 one (so a CUDA run and a CPU
run of a stochastic codec differ bit for bit, equal in distribution).

The Lattice quantizer (SwarmSGD's gossip codec) runs its float64 coordinates in the kernels too,
operation for operation as the plain path (``1 / eps`` and the shift in float64, ``torch.round``'s
half-to-even, the checksum's block sums exact in int64): ``lattice_encode`` and ``lattice_decode``
give byte-identical payloads, values and ok flags given the same uniforms.

No host round trip in the hot path: scales, non-finite flags and tie counts stay device tensors.
The exceptions are marked ``# host sync (allow-listed)`` and are checked by
tests/test_triton_kernels.py: two malformed-payload checks that must raise (TernGrad's base-3
decode, TopK's indices), and one read per Lattice call (encode reads max|x| because it must raise
on a step too small for the values; decode_relative returns its ok flag as a Python bool).
"""

from __future__ import annotations

import importlib


# Codec names (of the quantizer under error-feedback wrappers) whose whole step runs on Triton
# (Lattice: encode and decode_relative; it serves SwarmSGD's gossip, never the DDP hook).
TRITON_CODECS = ("qsgd", "terngrad", "onebit_quantizer", "scaled_sign", "signsgd", "topk_sparsifier", "lattice")


def runs_on_device(codec, device) -> bool:
    """Whether ``codec`` encodes and decodes tensors on ``device`` without leaving it: its plan
    runs that device's tensors on Triton and the codec is a Triton codec, bare or under a wrapper
    whose own work is device tensor ops around its inner codec's kernels (``ErrorFeedback``, and
    the codecs built on it, say so with ``runs_inner_kernels = True``; the kernels import no
    codec). The DDP hook then skips its host staging."""
    while getattr(codec, "runs_inner_kernels", False):
        codec = codec.inner
    return getattr(codec, "name", None) in TRITON_CODECS and codec.plan.for_device(device) == "triton"


def family(name: str):
    """The kernel module ``name`` (imports Triton on first use)."""
    return importlib.import_module(f"hvd_compress.torch.kernels.{name}")


def qsgd_encode(x, bits, bucket, norm, generator=None, noise=None):
    return family("qsgd").encode(x, bits, bucket, norm, generator, noise)


def terngrad_scale(x, clip):
    return family("terngrad").local_scale(x, clip)


def terngrad_encode(x, scale, base3, generator=None, noise=None):
    return family("terngrad").encode(x, scale, base3, generator, noise)


def onebit_encode(x, bucket):
    return family("onebit").encode(x, bucket)


def sign_encode(x, scale_mode="mean"):
    return family("sign").encode(x, scale_mode)


def fused_feedback(name, x, residual, bounds, *args):
    """The fused error-feedback step of ``onebit`` / ``sign`` (``None``: take the other paths)."""
    from hvd_compress.torch.kernels.common import fused_feedback as run

    return run(family(name).encode_with_residual, x, residual, bounds, *args)


def signsgd_vote(payloads, numel):
    if not payloads:
        return None
    return family("sign").vote(payloads, numel)


# Input dtypes the Lattice kernels widen to fp32 exactly (the plain path widens to float64 directly,
# so a float64 input stays there).
_LATTICE_DTYPES = ("torch.float32", "torch.float16", "torch.bfloat16")


def lattice_encode(x, bits, eps, shift_seed, generator=None, noise=None):
    """``(payload, max|x| or None)``; the codec raises on a too-small step (``None``: plain path)."""
    if str(x.dtype) not in _LATTICE_DTYPES:
        return None
    return family("lattice").encode(x, bits, eps, shift_seed, generator, noise)


def lattice_decode(payload, reference, bits):
    """``(values, ok)`` decoded relative to ``reference`` (``None``: take the plain path)."""
    if str(reference.dtype) not in _LATTICE_DTYPES:
        return None
    return family("lattice").decode_relative(payload, reference, bits)


def topk_encode(x, k):
    return family("topk").encode(x, k)


def topk_decode(payload, numel, k):
    return family("topk").decode(payload, numel, k)


def topk_aggregate(payloads, numel, k):
    if not payloads:
        return None
    return family("topk").aggregate(payloads, numel, k)


# Decoders: (module, function) per native decoder, so NativeDecoding routes decode, decode_into
# and aggregate through Triton with the native decoder's arguments.
_DECODERS = {
    "qsgd_decode_into": "qsgd",
    "terngrad_decode_into": "terngrad",
    "onebit_decode_into": "onebit",
    "sign_decode_into": "sign",
}


def decode(native_kernel, payload, numel, *args):
    import torch

    out = torch.empty(numel, dtype=torch.float32, device=payload.device)
    family(_DECODERS[native_kernel.__name__]).decode_into(payload, out, *args)
    return out


def decode_to(native_kernel, payload, out, *args) -> bool:
    if str(out.dtype) != "torch.float32" or not out.is_contiguous():
        return False
    family(_DECODERS[native_kernel.__name__]).decode_into(payload, out, *args)
    return True


def aggregate(native_kernel, payloads, numel, *args):
    if not payloads:
        return None
    from hvd_compress.torch.kernels.common import aggregate as run

    return run(family(_DECODERS[native_kernel.__name__]).decode_into, payloads, numel, payloads[0].device, *args)
