"""The rule all four parameter-server algorithms share: asynchronous SVRG on sharded servers.

An algorithm is a small object with explicit state: each server shard keeps a plain dict of numpy
arrays for its slice of the model (``init_state``), and the algorithm says

* server side: which point the workers evaluate gradients at (``query_point``), how that point is
  encoded for a pull (``encode_model``), how a received gradient updates the state (``apply``),
  what happens at an epoch boundary (``begin_epoch``: the SVRG snapshot), and which point's loss
  is reported (``output``);
* worker side: how the variance-reduced gradient
  ``alpha = grad f_a(x_hat) - grad f_a(x_snapshot) + grad f(x_snapshot)`` is encoded for a push
  (``encode_gradient``).

The runtime (:mod:`hvd_compress.ps.runtime`) moves the messages; the algorithms never see Ray.

Epoch structure (as in the paper's Algorithms 1-3): at the start of epoch s every shard fixes its
snapshot, the workers compute the full gradient at it in parallel (fp32), then the inner loop runs
without barriers: each worker repeatedly pulls the model from every shard, computes alpha on a
mini-batch and pushes it; each shard applies whatever arrives, in arrival order, until it has
applied ``inner_steps`` updates in the epoch.
"""

from __future__ import annotations

from typing import Any, Dict, Tuple

import numpy as np

from hvd_compress.ps import wire

Encoded = Tuple[str, int, np.ndarray]
State = Dict[str, Any]


class AsyncSVRG:
    """Full-precision asynchronous SVRG; the base of every algorithm here.

    Args:
      step_size: the server's learning rate eta (``x <- x - eta * g``). For SVRG on an L-smooth
        problem ``eta`` around ``0.1/L .. 0.5/L`` is the usual range; asynchrony (staleness tau)
        asks for the lower end as tau grows.
    """

    name = "AsyncSVRG"

    def __init__(self, step_size: float = 0.5):
        if not step_size > 0:
            raise ValueError(f"step_size must be positive, got {step_size}")
        self.step_size = float(step_size)

    def settings(self) -> Dict[str, Any]:
        return {"step_size": self.step_size}

    def __repr__(self) -> str:
        inner = ", ".join(f"{k}={v}" for k, v in self.settings().items())
        return f"{self.name}({inner})"

    # ------------------------------------------------------------------ server side
    def init_state(self, x0: np.ndarray) -> State:
        x0 = np.asarray(x0, np.float64).copy()
        return {"x": x0, "snapshot": x0.copy()}

    def begin_epoch(self, state: State, epoch: int) -> None:
        """SVRG: the snapshot is the last iterate, and the next epoch starts from it."""
        state["snapshot"] = state["x"].copy()

    def query_point(self, state: State) -> np.ndarray:
        return state["x"]

    def output(self, state: State) -> np.ndarray:
        return self.query_point(state)

    def apply(self, state: State, g: np.ndarray) -> None:
        state["x"] -= self.step_size * g

    def encode_model(self, v: np.ndarray, snapshot: np.ndarray, rng: np.random.Generator) -> Encoded:
        """Full precision; "same" (no payload) when the model is the worker's snapshot."""
        if np.array_equal(v, snapshot):
            return "same", 0, np.zeros(0, np.uint8)
        return wire.fp32(v)

    # ------------------------------------------------------------------ worker side
    def encode_gradient(self, g: np.ndarray, rng: np.random.Generator) -> Encoded:
        return wire.fp32(g)
