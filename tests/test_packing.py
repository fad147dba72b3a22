"""Spec: bit packing round-trips exactly and uses exactly the documented number of bytes."""

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from hvd_compress.torch.exchange import chunk_bounds
from hvd_compress.torch.packing import base3_nbytes, pack_base3, pack_bits, packed_nbytes, unpack_base3, unpack_bits


@settings(max_examples=60, deadline=None)
@given(bits=st.sampled_from([1, 2, 4, 8]), data=st.data())
def test_pack_bits_round_trip(bits, data):
    codes = data.draw(st.lists(st.integers(0, 2**bits - 1), max_size=300))
    t = torch.tensor(codes, dtype=torch.uint8)
    packed = pack_bits(t, bits)
    assert packed.dtype == torch.uint8 and packed.numel() == packed_nbytes(len(codes), bits)
    assert torch.equal(unpack_bits(packed, bits, len(codes)), t)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 2), max_size=300))
def test_base3_round_trip(codes):
    t = torch.tensor(codes, dtype=torch.uint8)
    packed = pack_base3(t)
    assert packed.numel() == base3_nbytes(len(codes)) and (packed.numel() == 0 or int(packed.max()) <= 242)
    assert torch.equal(unpack_base3(packed, len(codes)), t)


def test_pack_bits_layout_is_little_endian_first_code_lowest():
    assert pack_bits(torch.tensor([1, 0, 0, 0, 0, 0, 0, 1], dtype=torch.uint8), 1).tolist() == [0b10000001]
    assert pack_bits(torch.tensor([3, 0, 2, 1], dtype=torch.uint8), 2).tolist() == [0b01100011]
    assert pack_bits(torch.tensor([0xA, 0x5], dtype=torch.uint8), 4).tolist() == [0x5A]


@settings(max_examples=200, deadline=None)
@given(numel=st.integers(1, 5000), parts=st.integers(1, 8), align=st.sampled_from([1, 8, 40, 512, 1024]))
def test_chunk_bounds_cover_without_gaps(numel, parts, align):
    bounds = chunk_bounds(numel, parts, align)
    assert len(bounds) == parts
    assert bounds[0][0] == 0 and bounds[-1][1] == numel
    assert all(a <= b for a, b in bounds)
    assert all(bounds[i][1] == bounds[i + 1][0] for i in range(parts - 1))
    if numel >= parts:
        assert all(b > a for a, b in bounds), "every owner gets a non-empty chunk"
    if numel > align * parts:
        assert all(a % align == 0 for a, _ in bounds), "chunks start on bucket boundaries"
