"""Acc-AsyLPG: AsyLPG accelerated by Katyusha-style momentum (Yu, Wu, Huang, NeurIPS 2019).

The momentum is the single "negative momentum" of Katyusha in the simplified form of MiG
(Zhou, Shang, Cheng, ICML 2018), which is what an asynchronous parameter server can hold without
extra communication. Each shard keeps ``x`` (the iterate moved by gradients) and the snapshot
``x~``; workers evaluate gradients at the coupled point

    y = theta * x + (1 - theta) * x~

(pulled with AsyLPG's adaptive precision, the budget measured against ``||y - x~||^2``), the server
applies ``x <- x - eta * Q(alpha)``, and at the end of an epoch the snapshot becomes the epoch's
average of ``y``: ``x~ <- theta * mean(x) + (1 - theta) * x~``. ``x`` is NOT reset to the snapshot
(unlike plain SVRG). The reported model is ``y``.

How to tune: ``theta`` in (0, 1] (default 0.5; 1 is plain SVRG without the reset) pulls the query
point towards the snapshot, which damps the noise of large steps; take ``step_size`` about
``1/theta`` times what works for AsyLPG (the effective step on ``y`` is ``theta * eta``).
Acceleration pays most on ill-conditioned problems.

Example::

    from hvd_compress.ps import AccAsyLPG, run, synthetic_logistic
    result = run(synthetic_logistic(), AccAsyLPG(step_size=2.0, theta=0.5), target_loss=0.35)
"""

from __future__ import annotations

import numpy as np

from hvd_compress.ps.asylpg import AsyLPG


class AccAsyLPG(AsyLPG):
    """AsyLPG with one Katyusha (MiG) momentum: gradients at ``theta x + (1 - theta) x~``."""

    name = "Acc-AsyLPG"

    def __init__(
        self, step_size: float = 1.0, bits: int = 8, mu: float = 0.5, theta: float = 0.5, max_model_bits: int = 24
    ):
        super().__init__(step_size, bits, mu, max_model_bits)
        if not 0 < theta <= 1:
            raise ValueError(f"theta must be in (0, 1], got {theta}")
        self.theta = float(theta)

    def settings(self):
        return {**super().settings(), "theta": self.theta}

    def init_state(self, x0):
        state = super().init_state(x0)
        state["x_sum"] = np.zeros_like(state["x"])
        state["count"] = 0
        return state

    def begin_epoch(self, state, epoch):
        if state["count"]:
            mean_x = state["x_sum"] / state["count"]
            state["snapshot"] = self.theta * mean_x + (1.0 - self.theta) * state["snapshot"]
        else:  # the first epoch (or one without updates): the snapshot is the current point
            state["snapshot"] = self.query_point(state).copy()
        state["x_sum"][:] = 0.0
        state["count"] = 0

    def query_point(self, state):
        return self.theta * state["x"] + (1.0 - self.theta) * state["snapshot"]

    def apply(self, state, g):
        state["x"] -= self.step_size * g
        state["x_sum"] += state["x"]
        state["count"] += 1
