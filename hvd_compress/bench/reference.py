"""Plain reference implementations of each codec's math, for the throughput benchmark.

Each reference does what the codec does, written the obvious way in torch ops: the whole tensor at
once, a fresh temporary per step, and an *unpacked* payload (one int8 per value instead of packed
bits, plus the fp32 scales). They are what "just write it in PyTorch" costs, and the yardstick the
packed, cache-blocked codecs in :mod:`hvd_compress.torch.codecs` are measured against by
``python -m hvd_compress.bench codecs``. They are not wire-compatible with the codecs (int8 codes
travel 8 bits per value), and they are never used in training.

They are *not* the wire-format definitions: those are the numpy references in
:mod:`hvd_compress.codecs` (``hvd_compress.reference("qsgd:bits=4")``), which every kernel is
tested against byte for byte. These stay torch ops on purpose: the benchmark measures what plain
PyTorch costs on the same device, which a numpy alias would not.

``reference_for(codec)`` returns ``(encode, decode)`` closures for a codec object:
``encode(x, generator) -> payload`` (a tuple of tensors) and ``decode(payload, numel) -> tensor``.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch


def _rand(shape, generator, device):
    """Uniforms from ``generator`` on the CPU; on a GPU the device's own generator (a CPU
    generator cannot draw there, and a host-to-device copy would not be the torch-ops path)."""
    if device.type == "cpu":
        return torch.rand(shape, generator=generator)
    return torch.rand(shape, device=device)


def _pad(x: torch.Tensor, bucket: int) -> torch.Tensor:
    pad = (-x.numel()) % bucket
    return torch.cat([x, x.new_zeros(pad)]).view(-1, bucket) if pad else x.view(-1, bucket)


# ----------------------------------------------------------------------------- QSGD
def qsgd_encode(x: torch.Tensor, levels: int, bucket: int, norm: str, generator=None):
    b = _pad(x, bucket)
    scales = b.abs().amax(dim=1) if norm == "max" else b.norm(dim=1)
    y = b.abs() / scales.clamp(min=1e-30).unsqueeze(1) * levels
    low = y.floor()
    level = low + (_rand(y.shape, generator, y.device) < (y - low)).float()
    level = level.clamp(0, levels)
    codes = (torch.sign(b) * level).to(torch.int8).view(-1)[: x.numel()]
    return codes, scales


def qsgd_decode(payload, numel: int, levels: int, bucket: int):
    codes, scales = payload
    step = (scales / levels).repeat_interleave(bucket)[:numel]
    return codes.to(torch.float32) * step


# ----------------------------------------------------------------------------- TernGrad
def terngrad_encode(x: torch.Tensor, clip: Optional[float], generator=None, scale=None):
    if scale is None:
        scale = x.abs().max()
        if clip is not None:
            scale = torch.minimum(scale, clip * x.std())
    prob = (x.abs() / scale).clamp(max=1.0)
    keep = _rand(x.shape, generator, x.device) < prob
    codes = (torch.sign(x) * keep.float()).to(torch.int8)
    return codes, scale.reshape(1)


def terngrad_decode(payload, numel: int):
    codes, scale = payload
    return codes.to(torch.float32) * scale


# ----------------------------------------------------------------------------- 1-bit SGD
def onebit_encode(x: torch.Tensor, bucket: int):
    b = _pad(x, bucket)
    n, pad = x.numel(), (-x.numel()) % bucket
    positive = b >= 0
    valid = torch.ones_like(b, dtype=torch.bool).view(-1)
    if pad:
        valid[n:] = False
    valid = valid.view_as(b)
    pos = positive & valid
    neg = ~positive & valid
    pos_mean = (b * pos).sum(1) / pos.sum(1).clamp(min=1)
    neg_mean = (b * neg).sum(1) / neg.sum(1).clamp(min=1)
    codes = positive.view(-1)[:n].to(torch.int8)
    return codes, pos_mean, neg_mean


def onebit_decode(payload, numel: int, bucket: int):
    codes, pos_mean, neg_mean = payload
    pos = pos_mean.repeat_interleave(bucket)[:numel]
    neg = neg_mean.repeat_interleave(bucket)[:numel]
    return torch.where(codes.bool(), pos, neg)


# ----------------------------------------------------------------------------- scaled sign
def sign_encode(x: torch.Tensor):
    codes = torch.where(x >= 0, 1, -1).to(torch.int8)
    return codes, x.abs().mean().reshape(1)


def sign_decode(payload, numel: int):
    codes, scale = payload
    return codes.to(torch.float32) * scale


# ----------------------------------------------------------------------------- top-k
def topk_encode(x: torch.Tensor, k: int):
    _, idx = torch.topk(x.abs(), k, sorted=False)
    return idx, x[idx]


def topk_decode(payload, numel: int):
    idx, values = payload
    out = torch.zeros(numel, device=values.device)
    out[idx] = values
    return out


# ----------------------------------------------------------------------------- casts
def cast_encode(x: torch.Tensor, dtype):
    return (x.to(dtype),)


def cast_decode(payload, numel: int):
    return payload[0].to(torch.float32)


Encode = Callable[..., Tuple[torch.Tensor, ...]]
Decode = Callable[..., torch.Tensor]


def reference_for(codec) -> Optional[Tuple[Encode, Decode]]:
    """``(encode(x, generator), decode(payload, numel))`` doing ``codec``'s math plainly, or
    ``None`` when there is no reference for it (custom-exchange codecs such as PowerSGD)."""
    q = codec
    while hasattr(q, "inner"):  # error feedback / DoubleSqueeze wrap the quantizer we time
        q = q.inner
    name = getattr(q, "name", "")
    if name == "qsgd":
        return (
            lambda x, g=None: qsgd_encode(x, q.levels, q.bucket_size, q.norm, g),
            lambda p, n: qsgd_decode(p, n, q.levels, q.bucket_size),
        )
    if name == "terngrad":
        return (lambda x, g=None: terngrad_encode(x, q.clip, g), terngrad_decode)
    if name == "onebit_quantizer":
        return (lambda x, g=None: onebit_encode(x, q.bucket_size), lambda p, n: onebit_decode(p, n, q.bucket_size))
    if name in ("scaled_sign", "signsgd"):
        return (lambda x, g=None: sign_encode(x), sign_decode)
    if name == "topk_sparsifier":
        return (lambda x, g=None: topk_encode(x, q.k(x.numel())), topk_decode)
    if name in ("fp16", "bf16"):
        dtype = torch.float16 if name == "fp16" else torch.bfloat16
        return (lambda x, g=None: cast_encode(x, dtype), cast_decode)
    if name == "none":
        return (lambda x, g=None: (x.clone(),), cast_decode)
    return None
