"""The reference backend: any registered :class:`hvd_compress.CodecSpec` as a torch codec.

The spec's numpy ``encode``/``decode`` run on the host, so a codec written only as numpy works with
every torch frontend at once: as ``compression=`` of ``hvd.DistributedOptimizer`` (a Horovod
Compressor with the stock engine), in ``hc.DistributedOptimizer``, the DDP hook, inside
``doublesqueeze:codec=<name>`` and under :class:`ErrorFeedback`.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from hvd_compress.core import checks
from hvd_compress.core.spec import CodecSpec
from hvd_compress.torch.codecs.base import Codec

_warned_cuda = False


def numpy_rng(generator) -> np.random.Generator:
    """The numpy stream for one encode: seeded from the exchange's per-(seed, rank, step, tensor,
    chunk, phase) ``torch.Generator`` (reproducible runs), else from torch's global RNG (so
    ``torch.manual_seed`` governs direct calls too)."""
    if generator is not None:
        return np.random.default_rng(generator.initial_seed())
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))


def _host(t: torch.Tensor, dtype: torch.dtype) -> np.ndarray:
    global _warned_cuda
    if t.device.type != "cpu" and not _warned_cuda:
        _warned_cuda = True
        warnings.warn(
            "hvd_compress: a reference-backend codec (numpy, host) got a tensor on "
            f"{t.device}; every encode/decode copies it to the host and back. Fine for trying "
            "a codec out; write a torch kernel for speed (docs/extending.md).",
            stacklevel=4,
        )
    return t.detach().to(device="cpu", dtype=dtype).contiguous().numpy()


class ReferenceCodec(Codec):
    """A torch codec whose wire format is ``spec``'s numpy reference (built by
    ``hvd_compress.torch.from_spec("<registered name>")``).

    ``spec.pattern`` is the default ``exchange`` (override it with the common option); the other
    common options (``min_numel``, ``compress_1d``, ``nonfinite``, ``seed``) work as for every codec.
    Every encode and decode is checked: wrong sizes or dtypes raise ``ValueError`` naming the
    codec and the expected size, on every rank, on the first call.

    Speed: numpy on the host, one tensor copy each way; a one-time warning on CUDA tensors.
    """

    def __init__(self, spec: CodecSpec, **options):
        if not isinstance(spec, CodecSpec):
            raise TypeError(f"ReferenceCodec takes a hvd_compress.CodecSpec, got {spec!r}")
        options.setdefault("exchange", spec.pattern)
        super().__init__(**options)
        self.spec = spec
        self.name = spec.name  # type: ignore[misc]  (describe()/fingerprint() name the codec)
        self.stochastic = spec.stochastic  # type: ignore[misc]

    def params(self):
        return self.spec.knobs()

    def alignment(self):
        return self.spec.alignment()

    def payload_nbytes(self, numel):
        return checks.expected_nbytes(self.spec, numel)

    def encode(self, x, generator=None, scale=None, noise=None):
        host_noise = None if noise is None else _host(noise, torch.float32)
        payload = checks.encode(self.spec, _host(x.reshape(-1), torch.float32), numpy_rng(generator), host_noise)
        return torch.from_numpy(payload.copy()).to(x.device)

    def decode(self, payload, numel):
        out = checks.decode(self.spec, _host(payload, torch.uint8), numel)
        return torch.from_numpy(out.copy()).to(payload.device)
