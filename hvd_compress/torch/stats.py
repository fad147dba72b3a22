"""Wire statistics for the torch frontends: bytes handed to collectives per codec label, and, when
asked for, the compression error of what this worker encoded.

The same functions and keys as ``hvd_compress.tensorflow.stats``: :func:`wire_stats`,
:func:`reset_wire_stats`, :func:`compression_error`. Counters are plain Python numbers (sizes are
known on the host); the error sums stay tensors on the gradient's device until
:func:`compression_error` reads them, so tracking adds no host synchronisation to the step.
"""

from __future__ import annotations

import threading
from typing import Any, Dict

import torch


class WireStats:
    """Bytes handed to collectives, per codec label, since start (or the last reset).

    ``payload_bytes``: bytes this worker's encoder produced (what one copy of its message costs).
    ``sent_bytes``: bytes this worker transmits to other ranks under the collective's standard
    algorithm (ring allreduce ``2(N-1)/N n``; alltoall: the splits for other ranks; ring allgather
    ``(N-1)/N`` of the gathered buffer). ``values``: tensor values exchanged.

    With :attr:`track_error` on, the exchange also adds ``||p - C(p)||^2`` and ``||p||^2`` of what
    each worker encoded (``p``: the gradient, or with error feedback the gradient plus the residual,
    so that ``p - C(p)`` is the new residual). It costs one extra decode per tensor, so it is off
    by default.
    """

    def __init__(self):
        self._lock = threading.Lock()
        self.track_error = False
        self.reset()

    def reset(self):
        with self._lock:
            self._rows: Dict[str, Dict[str, float]] = {}
            self._errors: Dict[str, Dict[Any, torch.Tensor]] = {}  # label -> device -> [err, ref]

    def add(self, label: str, values: int, payload_bytes: int, sent_bytes: float, tensors: int = 1):
        with self._lock:
            row = self._rows.setdefault(label, {"values": 0, "payload_bytes": 0, "sent_bytes": 0.0, "tensors": 0})
            row["values"] += int(values)
            row["payload_bytes"] += int(payload_bytes)
            row["sent_bytes"] += float(sent_bytes)
            row["tensors"] += tensors

    def add_error(self, label: str, error: torch.Tensor, reference: torch.Tensor) -> None:
        """Add ``||error||^2`` and ``||reference||^2`` (float64, on their device: no host sync)."""
        sums = torch.stack([error.double().pow(2).sum(), reference.double().pow(2).sum()])
        with self._lock:
            per_device = self._errors.setdefault(label, {})
            total = per_device.get(sums.device)
            per_device[sums.device] = sums if total is None else total + sums

    def snapshot(self) -> Dict[str, Dict[str, float]]:
        with self._lock:
            out = {}
            for label, row in self._rows.items():
                row = dict(row)
                v = max(row["values"], 1)
                row["bits_per_value"] = 8.0 * row["payload_bytes"] / v
                row["sent_bits_per_value"] = 8.0 * row["sent_bytes"] / v
                out[label] = row
            return out

    def errors(self) -> Dict[str, Dict[str, float]]:
        """Per label: ``error_sq``, ``reference_sq`` and ``relative_error`` (reads the device sums)."""
        with self._lock:
            sums = {label: [t.cpu() for t in per_device.values()] for label, per_device in self._errors.items()}
        out = {}
        for label, parts in sums.items():
            err = float(sum(float(p[0]) for p in parts))
            ref = float(sum(float(p[1]) for p in parts))
            if err > 0 or ref > 0:
                ratio = err / ref if ref > 0 else float("inf")
                out[label] = {"error_sq": err, "reference_sq": ref, "relative_error": ratio**0.5}
        return out


WIRE_STATS = WireStats()


def wire_stats() -> Dict[str, Dict[str, float]]:
    """Bytes handed to collectives and values exchanged, per codec, since start or the last
    :func:`reset_wire_stats`. Keys per codec: ``values``, ``payload_bytes``, ``sent_bytes``,
    ``tensors``, ``bits_per_value`` and ``sent_bits_per_value``. Tensors that went uncompressed
    (below ``min_numel``, 1-D, integer) are counted under ``"uncompressed"``."""
    return WIRE_STATS.snapshot()


def reset_wire_stats() -> None:
    WIRE_STATS.reset()


def track_compression_error(on: bool = True) -> None:
    """Turn on (or off) counting the compression error in every exchange (see :class:`WireStats`);
    read it with :func:`compression_error`. How to use: turn it on for an epoch to see how much a
    codec distorts the gradients, then off again: it adds one decode per tensor. On Gaussian
    values (``tests/test_torch_compression_error.py``) the relative error is about 0.01 for
    QSGD-8, 0.2 for QSGD-4, 0.6 for OneBit and EFSign, 0.95 for TopK at 1% and 1.0 for TernGrad
    (unbiased, high variance); error feedback carries it into the next step."""
    WIRE_STATS.track_error = bool(on)


def compression_error() -> Dict[str, Dict[str, float]]:
    """Per codec: ``error_sq`` (sum of ``||p - C(p)||^2``), ``reference_sq`` (sum of ``||p||^2``)
    over what this worker encoded since :func:`track_compression_error` (or the last
    :func:`reset_wire_stats`), and ``relative_error`` (the square root of their ratio). The same
    keys as ``hvd_compress.tensorflow.compression_error()``."""
    return WIRE_STATS.errors()
