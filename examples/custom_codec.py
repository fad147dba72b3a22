"""A codec defined outside hvd_compress: 2-bit stochastic quantization, one fp32 scale per bucket.

Each value x in a bucket with scale s = max|x| lands on one of four levels {-s, -s/3, s/3, s},
rounded stochastically between its two neighbours so the result is unbiased. Import this file
(it registers "twobit"), then use the name anywhere a spec string goes:

    import custom_codec  # noqa: F401  (registers "twobit")
    import hvd_compress.torch as hc
    opt = hvd.DistributedOptimizer(opt, named_parameters=model.named_parameters(),
                                   compression=hc.from_spec("twobit:bucket_size=256"))

Guide: docs/extending.md. Check it: ``python -c "import custom_codec, hvd_compress.testing as t;
print(t.check_codec('twobit'))"``.
"""

from dataclasses import dataclass

import numpy as np

import hvd_compress


@hvd_compress.register_codec("twobit")
@dataclass(frozen=True)
class TwoBit(hvd_compress.CodecSpec):
    """Args:
    bucket_size: values sharing one fp32 scale (>= 4, a multiple of 4). Smaller: lower
        variance, more bytes (32 / bucket_size extra bits per value).
    """

    bucket_size: int = 256

    def __post_init__(self):
        if self.bucket_size < 4 or self.bucket_size % 4:
            raise ValueError(f"bucket_size must be a positive multiple of 4, got {self.bucket_size}")

    def alignment(self):
        return self.bucket_size  # reduce-scatter chunks hold whole buckets

    def payload_nbytes(self, numel):
        return -(-numel // 4) + 4 * -(-numel // self.bucket_size)

    def encode(self, x, rng, *, noise=None):
        n, pad = x.size, -x.size % self.bucket_size
        buckets = np.pad(x, (0, pad)).reshape(-1, self.bucket_size)
        scales = np.abs(buckets).max(axis=1, initial=0).astype(np.float32)
        inv = np.divide(1.5, scales, out=np.zeros_like(scales), where=scales > 0)
        y = ((buckets * inv[:, None]).reshape(-1)[:n] + 1.5).astype(np.float32)  # in [0, 3]
        u = rng.random(n, dtype=np.float32) if noise is None else noise
        codes = np.clip(np.floor(y) + (u < y - np.floor(y)), 0, 3).astype(np.uint8)
        codes = np.pad(codes, (0, -n % 4)).reshape(-1, 4)
        packed = codes[:, 0] | codes[:, 1] << 2 | codes[:, 2] << 4 | codes[:, 3] << 6
        return np.concatenate([packed.astype(np.uint8), scales.view(np.uint8)])

    def decode(self, payload, numel):
        ncode = -(-numel // 4)
        codes = (payload[:ncode, None] >> np.array([0, 2, 4, 6], np.uint8)) & 3
        scales = payload[ncode:].view(np.float32)
        level = codes.reshape(-1)[:numel].astype(np.float32) / np.float32(1.5) - np.float32(1)
        return level * np.repeat(scales, self.bucket_size)[:numel]
