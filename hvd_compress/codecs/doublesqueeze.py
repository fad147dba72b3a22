"""DoubleSqueeze (Tang et al., ICML 2019) as a numpy reference of its whole exchange.

A wrapper, not a format: the bytes are the inner codec's (any reference codec with a payload:
``onebit``, ``qsgd``, ``topk``, ...). What it defines is the exchange, which :meth:`DoubleSqueeze.reduce`
simulates over every rank's gradient with explicit residual state (the torch codec,
``hvd_compress/torch/codecs/doublesqueeze.py``, matches it: ``tests/test_reducer_references.py``):

* worker ``i`` (error feedback): ``v_i = g_i + e_i``; the tensor is cut into one chunk per rank
  (:func:`hvd_compress.common.chunk_bounds`, aligned to the inner codec); each chunk is encoded
  and sent to its owner (round ``"a2a"``); ``e_i = v_i - decode(C(v_i))``;
* owner ``j`` of chunk ``j`` (the "server"): ``u_j = mean_i decode(C(v_i)_j) + s_j``; send
  ``C(u_j)`` to everyone (round ``"ag"``); ``s_j = u_j - decode(C(u_j))``;
* every rank ends with the decoded ``C(u_j)``, chunk by chunk.

A shared-scale codec (TernGrad) first agrees on the scale, the max of the ranks' proposals for
their gradients (round ``"scale"``, 4 bytes). A residual that is not finite everywhere is reset to
zero. A tensor with fewer values than ranks
takes the allgather exchange instead: every rank's ``C(v_i)`` to everyone (round ``"ag"``), their
mean (the inner codec's ``aggregate`` where it has one, e.g. SignSGD's vote), no server residual.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np

from hvd_compress.codecs.reduction import Reduction, as_grads, rank_sum
from hvd_compress.common import chunk_bounds
from hvd_compress.core.registry import reference, register_codec
from hvd_compress.core.spec import CodecSpec

# Codecs that carry worker error feedback in the frameworks already (named after it): DoubleSqueeze
# describes them by their own name, any other inner codec as "ef(...)" (what the frameworks wrap).
WORKER_FEEDBACK = frozenset({"onebit", "efsign", "topk"})
SUMMABLE = frozenset({"none", "fp16", "bf16"})  # ride a plain allreduce: nothing to squeeze
NOT_A_PAYLOAD = frozenset({"doublesqueeze", "powersgd", "gradiveq", "lattice"})

Noise = Callable[[int, int, int, int], np.ndarray]


@register_codec("doublesqueeze", builtin=True)
@dataclass(frozen=True)
class DoubleSqueeze(CodecSpec):
    """Two-sided error feedback around ``codec`` over the compressed reduce-scatter.

    State (a dict, one tensor's): ``worker_residual`` (each rank's flat fp32 ``e_i``, a list by
    rank) and ``server_residual`` (each owner's chunk residual ``s_j``, a list by owner).

    Args:
        codec: the inner codec: a reference spec, or a spec string (``"qsgd:bits=4"``).
    """

    codec: Any = "onebit"

    pattern = "reduce_scatter"

    def __post_init__(self):
        inner = reference(self.codec) if isinstance(self.codec, str) else self.codec
        if not isinstance(inner, CodecSpec):
            raise TypeError(f"DoubleSqueeze wraps a reference codec (a CodecSpec or a spec string), got {inner!r}")
        if inner.name in SUMMABLE:
            raise ValueError(f"DoubleSqueeze needs a non-summable codec; {inner.name} already rides a plain allreduce")
        if inner.name in NOT_A_PAYLOAD:
            raise ValueError(f"DoubleSqueeze wraps a codec with a payload format, not {inner.name}")
        object.__setattr__(self, "codec", inner)
        object.__setattr__(self, "stochastic", inner.stochastic)

    @property
    def inner(self) -> CodecSpec:
        return self.codec

    def describe(self) -> str:
        inner = self.inner.describe()
        return f"{self.name}({inner if self.inner.name in WORKER_FEEDBACK else f'ef({inner})'})"

    def spec_string(self) -> str:
        knobs = ",".join(f"{k}={v}" for k, v in self.inner.knobs().items())
        return f"{self.name}:codec={self.inner.name}" + (f",{knobs}" if knobs else "")

    def alignment(self):
        return self.inner.alignment()

    def payload_nbytes(self, numel):
        return self.inner.payload_nbytes(numel)

    def encode(self, x, rng=None, *, noise=None):
        return self.inner.encode(x, rng, noise=noise)

    def decode(self, payload, numel):
        return self.inner.decode(payload, numel)

    # ------------------------------------------------------------------ the exchange
    def exchange(self, world_size: int, numel: int) -> str:
        """``"reduce_scatter"``, or ``"allgather"`` for a tensor with fewer values than ranks."""
        return "reduce_scatter" if numel >= world_size else "allgather"

    def _mean(self, payloads: List[np.ndarray], numel: int) -> np.ndarray:
        aggregate = getattr(self.inner, "aggregate", None)
        if aggregate is not None:
            return np.asarray(aggregate(payloads, numel), np.float32)
        total = rank_sum([self.inner.decode(p, numel).astype(np.float32) for p in payloads])
        return (total / np.float32(len(payloads))).astype(np.float32)

    def _encode(self, x, who: int, chunk: int, phase: int, noise: Optional[Noise], rng, scale) -> np.ndarray:
        kw: Dict[str, Any] = {} if scale is None else {"scale": scale}
        no_rng: Any = None  # the draws are the noise, or there are none
        if not self.inner.stochastic:
            return self.inner.encode(x, no_rng, **kw)
        if noise is not None:
            return self.inner.encode(x, no_rng, noise=np.asarray(noise(who, chunk, phase, x.size), np.float32), **kw)
        if rng is None:
            raise ValueError(
                f"{self.inner.name} is stochastic: pass rng= or noise=(who, chunk, phase, numel) -> uniforms"
            )
        return self.inner.encode(x, rng, **kw)

    @staticmethod
    def _feedback(u: np.ndarray, decoded: np.ndarray) -> np.ndarray:
        e = (u - decoded).astype(np.float32)
        return e if np.isfinite(e).all() else np.zeros_like(e)

    def reduce(
        self,
        grads: Sequence[np.ndarray],
        state: Optional[Dict[str, Any]] = None,
        shape: Optional[Sequence[int]] = None,
        *,
        noise: Optional[Noise] = None,
        rng: Optional[np.random.Generator] = None,
    ) -> Reduction:
        """One step of every rank on one tensor: ``grads`` by rank, ``state`` as the last call
        returned (``shape`` is accepted for symmetry with the other reducers; the exchange is
        flat). A stochastic inner codec draws from ``noise(who, chunk, phase, numel)`` (``who``:
        the rank encoding, phase 0 for workers and 1 for owners; one uniform per value) or ``rng``."""
        xs = as_grads(grads)
        size, numel = len(xs), xs[0].size
        state = dict(state or {})
        old = state.get("worker_residual")
        pattern = self.exchange(size, numel)
        bounds = chunk_bounds(numel, size, self.alignment()) if pattern == "reduce_scatter" else [(0, numel)]
        rounds = []
        scale = None
        local_scale = getattr(self.inner, "local_scale", None)
        if local_scale is not None:  # a shared scale (TernGrad's): the max of the ranks' proposals
            scale = np.float32(max(float(local_scale(x)) for x in xs))
            rounds.append(("scale", [4] * size))
        payloads, worker_residual = [], []
        for i, x in enumerate(xs):
            v = x + old[i] if old is not None and old[i].size == numel else x.copy()
            mine = [self._encode(v[a:b], i, j, 0, noise, rng, scale) for j, (a, b) in enumerate(bounds)]
            decoded = np.concatenate([self.inner.decode(p, b - a) for p, (a, b) in zip(mine, bounds)])
            worker_residual.append(self._feedback(v, decoded))
            payloads.append(mine)
        state["worker_residual"] = worker_residual
        if pattern == "allgather":
            out = self._mean([p[0] for p in payloads], numel)
            return Reduction(out, state, rounds + [("ag", [p[0].size for p in payloads])])
        old_server = state.get("server_residual")
        server_residual, parts, sent = [], [], []
        for j, (a, b) in enumerate(bounds):
            mean = self._mean([p[j] for p in payloads], b - a)
            e = old_server[j] if old_server is not None and j < len(old_server) else None
            u = mean + e if e is not None and e.size == b - a else mean.copy()
            reencoded = self._encode(u, j, j, 1, noise, rng, scale)
            decoded = self.inner.decode(reencoded, b - a).astype(np.float32)
            server_residual.append(self._feedback(u, decoded))
            parts.append(decoded)
            sent.append(reencoded.size)
        state["server_residual"] = server_residual
        rounds += [("a2a", [sum(p.size for p in mine) for mine in payloads]), ("ag", sent)]
        return Reduction(np.concatenate(parts).astype(np.float32), state, rounds)
