"""TensorBoard for torch: wire statistics and compression error as scalars of a
``torch.utils.tensorboard.SummaryWriter`` (needs the ``tensorboard`` package).

::

    from torch.utils.tensorboard import SummaryWriter
    import hvd_compress.torch as hc

    writer = SummaryWriter("runs/qsgd4")               # on rank 0 (or one folder per rank)
    for epoch in range(epochs):
        train_one_epoch()
        hc.tensorboard.log_wire_stats(writer, epoch)
        hc.tensorboard.log_compression_error(writer, epoch, codec, model.named_parameters())

Then ``tensorboard --logdir runs``. What is written (``prefix`` defaults to ``hvd_compress/``):

* ``<prefix><codec>/bits_per_value``: payload bits per value this worker encoded (scales
  included) -- compare with the codec's nominal bits;
* ``<prefix><codec>/sent_bytes`` and ``/values``: running totals since the last
  :func:`hvd_compress.torch.reset_wire_stats` (the slope is bytes per step); the
  ``uncompressed`` row holds what bypassed the codec (biases, small tensors);
* ``<prefix>sent_bytes``: every row together, what this worker handed to collectives;
* ``<prefix>compression_error`` (from :func:`log_compression_error`):
  ``sqrt(sum ||g - C(g)||^2 / sum ||g||^2)`` over the compressible gradients passed in, each
  encoded and decoded locally -- the relative L2 error of one message, as the TF
  ``CompressionStatsCallback`` reports it.

How to tune: logging the stats is cheap (a dictionary copy); the compression error re-encodes the
gradients, one codec pass, so call it every N steps or once per epoch, not every step. Codecs that
exchange factors instead of payloads (PowerSGD, GradiVeQ) have no local encode; their error is
skipped. Log on rank 0 only unless you want per-worker curves (error-feedback residuals and
stochastic rounding differ per rank).
"""

from __future__ import annotations

from typing import Dict, Iterable, Optional, Tuple

import torch

from hvd_compress.torch.exchange import wire_stats

FIELDS = ("bits_per_value", "sent_bytes", "values")


def log_wire_stats(
    writer, step: int, prefix: str = "hvd_compress/", stats: Optional[Dict[str, Dict[str, float]]] = None
) -> Dict[str, float]:
    """Write :func:`~hvd_compress.torch.wire_stats` (or ``stats``) as scalars at ``step``;
    returns what was written (tag -> value)."""
    stats = wire_stats() if stats is None else stats
    written = {}
    for label, row in stats.items():
        for field in FIELDS:
            written[f"{prefix}{label}/{field}"] = float(row[field])
    written[f"{prefix}sent_bytes"] = float(sum(row["sent_bytes"] for row in stats.values()))
    for tag, value in written.items():
        writer.add_scalar(tag, value, step)
    return written


def compression_error(codec, named_tensors: Iterable[Tuple[str, torch.Tensor]], seed: int = 0) -> Optional[float]:
    """Relative L2 error of encoding then decoding each tensor the codec compresses (its
    ``.grad`` for parameters); ``None`` when no tensor qualifies or the codec has no local encode."""
    error_sq = reference_sq = 0.0
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, tensor in named_tensors:
            grad = tensor.grad if isinstance(tensor, torch.nn.Parameter) else tensor
            if grad is None or not codec.should_compress(grad):
                continue
            flat = grad.detach().reshape(-1).float().cpu().contiguous()
            try:
                decoded = codec.decode(codec.encode(flat, generator=generator), flat.numel())
            except NotImplementedError:
                return None
            error_sq += float((flat - decoded).double().pow(2).sum())
            reference_sq += float(flat.double().pow(2).sum())
    if reference_sq == 0.0:
        return None
    return (error_sq / reference_sq) ** 0.5


def log_compression_error(
    writer, step: int, codec, named_tensors: Iterable[Tuple[str, torch.Tensor]], prefix: str = "hvd_compress/"
) -> Optional[float]:
    """Write ``<prefix>compression_error`` for ``named_tensors`` (see :func:`compression_error`);
    returns the value, or ``None`` (nothing written)."""
    error = compression_error(codec, named_tensors)
    if error is not None:
        writer.add_scalar(f"{prefix}compression_error", error, step)
    return error
