"""Spec: hc.tensorboard writes the wire stats and the compression error as SummaryWriter scalars
that TensorBoard reads back, with the values wire_stats() and a local encode/decode give."""

import pytest
import torch

import hvd_compress.torch as hc
from hvd_compress.torch.exchange import WIRE_STATS

pytest.importorskip("tensorboard")
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402


def read_scalars(logdir) -> dict:
    events = EventAccumulator(str(logdir))
    events.Reload()
    return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}


def test_wire_stats_and_compression_error_read_back_from_the_event_file(tmp_path):
    codec = hc.from_spec("qsgd:bits=4")
    label = codec.describe()
    hc.reset_wire_stats()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.Linear(256, 10))
    torch.nn.functional.cross_entropy(model(torch.randn(32, 64)), torch.randint(0, 10, (32,))).backward()
    writer = SummaryWriter(str(tmp_path))
    try:
        for step in range(2):  # what an exchange of 64*256 values at 4 bits records, twice
            WIRE_STATS.add(label, values=64 * 256, payload_bytes=64 * 256 // 2, sent_bytes=64 * 256 // 2)
            WIRE_STATS.add("uncompressed", values=266, payload_bytes=266 * 4, sent_bytes=266 * 4)
            written = hc.tensorboard.log_wire_stats(writer, step)
            error = hc.tensorboard.log_compression_error(writer, step, codec, model.named_parameters())
    finally:
        writer.close()
        hc.reset_wire_stats()
    scalars = read_scalars(tmp_path)
    assert scalars[f"hvd_compress/{label}/bits_per_value"] == [(0, 4.0), (1, 4.0)]
    assert scalars[f"hvd_compress/{label}/values"] == [(0, 16384.0), (1, 32768.0)]  # running totals
    assert scalars["hvd_compress/sent_bytes"][-1] == (1, pytest.approx(2 * (8192 + 1064)))
    assert scalars["hvd_compress/uncompressed/bits_per_value"][0][1] == 32.0
    assert set(written) <= set(scalars)
    assert 0.01 < error < 0.5  # QSGD-4's relative error on a real gradient
    assert scalars["hvd_compress/compression_error"][-1] == (1, pytest.approx(error, rel=1e-6))


def test_compression_error_is_zero_for_lossless_and_none_without_a_local_encode():
    grads = [("w", torch.randn(128, 64))]
    assert hc.tensorboard.compression_error(hc.from_spec("none"), grads) == 0.0
    assert hc.tensorboard.compression_error(hc.from_spec("powersgd"), grads) is None
    assert hc.tensorboard.compression_error(hc.from_spec("qsgd"), [("b", torch.randn(10))]) is None  # 1-D: uncompressed
