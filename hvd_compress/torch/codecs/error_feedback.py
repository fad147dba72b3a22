"""Error feedback (memory): a wrapper that makes any codec's compression error re-enter."""

from __future__ import annotations

import torch

from hvd_compress.common import ErrorFeedbackFormat
from hvd_compress.core.state import ErrorFeedbackState
from hvd_compress.torch.codecs.base import Codec, Wrapper
from hvd_compress.torch.finite import all_finite, finite_flag


class ErrorFeedback(ErrorFeedbackFormat, Wrapper):
    """Error feedback around any codec: ``p = g + e``; send ``C(p)``; keep ``e = p - C(p)``.

    The identity ``C(p) + e_new == g + e_old`` holds exactly (up to fp32 rounding of one
    subtraction) every step, so nothing the codec drops is lost, only delayed. The residual ``e`` is
    per tensor name, fp32, in ``state.residual`` (:class:`~hvd_compress.core.state.ErrorFeedbackState`); a non-finite residual is reset to zero
    (never carried into later steps).

    Fused step: when the inner codec offers ``encode_with_residual(x, residual, bounds, draw,
    scale)`` (OneBit's and EFSign's quantizers do, on CPU) and keeps the default chunking, the
    whole step ``p = g + e; payloads = C(p); e = p - decode(payloads)`` runs in one native pass
    and updates the stored residual tensor in place (bit-identical to the unfused step). Any
    other codec, or a ``None`` answer, takes the generic path below.
    """

    # Its own work is elementwise tensor ops on the inner codec's device: it runs where the inner
    # codec's kernels run (read by hvd_compress.torch.kernels.runs_on_device).
    runs_inner_kernels = True
    State = ErrorFeedbackState

    def worker_encode(self, x, key, bounds, draw, scale=None):
        residuals = self.state.residual
        r = residuals.get(key)
        fused = getattr(self.inner, "encode_with_residual", None)
        if fused is not None and type(self.inner).worker_encode is Codec.worker_encode:
            done = fused(x, r, bounds, draw, scale)
            if done is not None:
                payloads, residuals[key] = done
                return payloads
        p = x + r if r is not None and r.numel() == x.numel() else x.clone()
        payloads = self.inner.worker_encode(p, key, bounds, draw, scale)
        decoded = torch.cat([self.inner.decode(pl, b - a) for pl, (a, b) in zip(payloads, bounds)])
        r = p.sub_(decoded)
        if r.device.type != "cpu":  # no host round trip on a GPU: reset on the device
            r.masked_fill_(~finite_flag(r).reshape(1), 0.0)
        elif not all_finite(r):
            r.zero_()
        residuals[key] = r
        return payloads
