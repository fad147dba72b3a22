"""Making the stock Horovod API carry real savings.

``hvd.DistributedOptimizer(opt, named_parameters=..., compression=codec)`` calls
``codec.compress(p.grad)`` from each parameter's gradient hook, allreduces what it returns, then
calls ``codec.decompress(output, ctx)`` in ``synchronize()``. For summable codecs (FP16,
NoCompression) ``compress`` returns the compressed tensor and Horovod's fused allreduce carries it.
For the others ``compress`` starts the codec's own bit-packed exchange (alltoall / allgather of
uint8 payloads, named after the parameter) and hands Horovod a one-value placeholder; the first
``decompress`` of a step finishes every exchange started in that step (round by round, so ranks
may visit parameters in different orders) and each ``decompress`` returns its parameter's average.

How the codec learns parameter names without extra calls: ``compress`` is called from Horovod's
``_allreduce_grad_async(self, p)`` (or its grouped variant); the engine looks up the calling
optimizer in the stack and maps ``p`` to its name with the optimizer's own ``_parameter_names``
(:mod:`hvd_compress.horovod_names`, the one module that reads frames, says exactly what of
Horovod it relies on).
State (error-feedback residuals, RNG steps) is therefore keyed by parameter name, and the
optimizer's ``state_dict()`` carries the codec state under ``"hvd_compress"`` from the first step
on. To restore state before the first step, call ``codec.load_state_dict(...)`` yourself.
"""

from __future__ import annotations

import warnings

import torch

from hvd_compress.horovod_names import torch_parameter_name
from hvd_compress.torch.finite import all_finite
from hvd_compress.torch.collectives import HorovodCollectives
from hvd_compress.torch.fusion import bucket_bytes_from_env, fused
from hvd_compress.torch.exchange import UNCOMPRESSED, WIRE_STATS, Driver, _ring_allreduce_bytes
from hvd_compress.torch.hierarchical import make_exchange

STATE_KEY = "hvd_compress"


class StockEngine:
    def __init__(self, codec):
        self.codec = codec
        # fused per bucket only when HVD_COMPRESS_BUCKET_BYTES asks: here the fused round waits
        # for synchronize() and so loses its overlap with backward, which measured slower on a
        # 1 Gbit/s link without latency (docs/fusion.md); one collective per tensor by default
        self.comm = fused(HorovodCollectives(), bucket_bytes_from_env(default=0))
        self.exchange = make_exchange(codec, self.comm)  # flat, or hierarchical (codec.hierarchical)
        self.driver = Driver(self.comm)
        self._results = {}  # finished exchanges of this step, until Horovod asks for each
        self._anonymous = 0
        self._hooked = set()
        self._warned_anonymous = False

    def reset_world(self) -> None:
        """After an elastic reset: drop exchanges left half-done by the failed step (their peers
        are gone) and re-run the agreement check in the new world at the next step."""
        self.driver = Driver(self.comm)
        self._results = {}
        self._anonymous = 0
        self.comm.reset()
        self.exchange.reset_world()

    def _hook_state_dict(self, opt):
        if id(opt) in self._hooked or not hasattr(opt, "register_state_dict_post_hook"):
            return
        codec = self.codec

        def save(optimizer, state_dict):
            state_dict[STATE_KEY] = codec.state_dict()
            return state_dict

        def load(optimizer, state_dict):
            saved = state_dict.pop(STATE_KEY, None) if isinstance(state_dict, dict) else None
            if saved is not None:
                codec.load_state_dict(saved)
            return state_dict

        opt.register_state_dict_post_hook(save)
        opt.register_load_state_dict_pre_hook(load)
        self._hooked.add(id(opt))

    # ------------------------------------------------------------------ Compressor API
    def compress(self, tensor):
        name, opt = torch_parameter_name(tensor)
        if opt is not None:
            self._hook_state_dict(opt)
            if getattr(opt, "op", None) not in (None, _hvd_op("Average"), _hvd_op("Sum")):
                raise ValueError(
                    "hvd_compress codecs support op=hvd.Average and hvd.Sum "
                    "(Adasum combines raw gradients and cannot take them compressed)"
                )
        op_sum = opt is not None and getattr(opt, "op", None) == _hvd_op("Sum")
        if name is None:
            if getattr(self.codec, "worker_feedback", False) and not self._warned_anonymous:
                warnings.warn(
                    "hvd_compress: could not find the parameter name of a gradient; "
                    "error-feedback state is keyed by call order. Pass "
                    "named_parameters=model.named_parameters() to hvd.DistributedOptimizer."
                )
                self._warned_anonymous = True
            name = f"anonymous.{self._anonymous}"
            self._anonymous += 1
        self.exchange.ensure_checked()
        codec, dtype = self.codec, tensor.dtype
        if not codec.should_compress(tensor):
            send = tensor if dtype in (torch.float32, torch.float64, torch.float16) else tensor.to(torch.float32)
            nbytes = send.numel() * send.element_size()
            WIRE_STATS.add(UNCOMPRESSED, tensor.numel(), nbytes, _ring_allreduce_bytes(nbytes, self.comm.size))
            return send.contiguous(), ("plain", name, dtype)
        if codec.summable and not self.exchange.hierarchical:  # hierarchical: our own three legs
            t = codec.to_summable(tensor.detach().reshape(-1).to(torch.float32)).view(tensor.shape)
            nbytes = t.numel() * t.element_size()
            WIRE_STATS.add(self.exchange.label, tensor.numel(), nbytes, _ring_allreduce_bytes(nbytes, self.comm.size))
            return t.contiguous(), ("sum", name, dtype)
        self.driver.start(name, self.exchange.average(name, tensor), tensor.device)
        return torch.zeros(1, device=tensor.device), ("exchange", name, dtype, op_sum)  # on the gradient's device

    def decompress(self, tensor, ctx):
        kind, name, dtype = ctx[0], ctx[1], ctx[2]
        if kind == "exchange":
            if name not in self._results:
                self._anonymous = 0
                self._results.update(self.driver.finish())
            out = self._results.pop(name)
            return out * self.comm.size if ctx[3] else out
        out = tensor if kind == "plain" else self.codec.from_summable(tensor.reshape(-1)).view(tensor.shape)
        out = out.to(dtype)
        if self.codec.nonfinite == "raise" and not all_finite(out):
            raise FloatingPointError(
                f"hvd_compress: gradient '{name}' holds NaN or Inf on at least one rank. Fix the loss "
                "or learning rate, or pass nonfinite='propagate' to the codec."
            )
        return out


def _hvd_op(name):
    import horovod.torch as hvd

    return getattr(hvd, name)
