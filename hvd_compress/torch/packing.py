"""Bit packing for codec payloads.

Fixed-width packing stores ``8 // b`` codes of ``b`` bits per byte, the first code in the lowest
bits (little-endian bit order), for ``b`` in {1, 2, 4, 8}. Base-3 packing stores five ternary codes
(values 0, 1, 2) per byte as ``t0 + 3*t1 + 9*t2 + 27*t3 + 81*t4`` (1.6 bits per value).

All functions are vectorized: the Python loops run over the bit lanes of a byte (at most 8),
never over values.
"""

from __future__ import annotations

import torch

from hvd_compress.common import FIXED_WIDTHS, base3_nbytes, packed_nbytes  # noqa: F401 (re-exported)


def pack_bits(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack a 1-D uint8 tensor of codes (each < 2**bits) into ``packed_nbytes`` bytes."""
    if bits == 8:
        return codes.to(torch.uint8).contiguous()
    per_byte = 8 // bits
    n = codes.numel()
    pad = (-n) % per_byte
    codes = codes.to(torch.uint8)
    if pad:
        codes = torch.cat([codes, codes.new_zeros(pad)])
    lanes = codes.view(-1, per_byte)
    out = lanes[:, 0].clone()
    for lane in range(1, per_byte):
        out |= lanes[:, lane] << (bits * lane)
    return out


def unpack_bits(packed: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_bits`: the first ``numel`` codes as a uint8 tensor."""
    if bits == 8:
        return packed[:numel]
    mask = (1 << bits) - 1
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=packed.device)
    codes = (packed.unsqueeze(1) >> shifts) & mask
    return codes.view(-1)[:numel]


_POW3 = (1, 3, 9, 27, 81)
_BASE3_TABLES: dict = {}


def _base3_table(device) -> torch.Tensor:
    table = _BASE3_TABLES.get(device)
    if table is None:
        byte = torch.arange(243, dtype=torch.int64)
        table = torch.stack([(byte // p) % 3 for p in _POW3], dim=1).to(torch.uint8).to(device)
        _BASE3_TABLES[device] = table
    return table


def pack_base3(codes: torch.Tensor) -> torch.Tensor:
    """Pack a 1-D tensor of ternary codes (0, 1, 2) five per byte."""
    n = codes.numel()
    pad = (-n) % 5
    codes = codes.to(torch.uint8)
    if pad:
        codes = torch.cat([codes, codes.new_zeros(pad)])
    lanes = codes.view(-1, 5)
    out = lanes[:, 0].clone()
    for lane in range(1, 5):
        out += lanes[:, lane] * _POW3[lane]
    return out


def unpack_base3(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_base3` (a table lookup per byte)."""
    table = _base3_table(packed.device)
    return table[packed.long()].view(-1)[:numel]


def f32_bytes(values: torch.Tensor) -> torch.Tensor:
    """fp32 values as little-endian bytes (x86 and ARM are little-endian; we do not swap)."""
    return values.to(torch.float32).contiguous().view(torch.uint8)


def bytes_f32(payload: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`f32_bytes` (copies, so the view is aligned)."""
    return payload.clone().view(torch.float32)
