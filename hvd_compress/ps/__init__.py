"""Asynchronous parameter server with double quantization, on Ray actors.

The four algorithms of Yu, Wu, Huang, "Double Quantization for Communication-Efficient
Distributed Optimization" (NeurIPS 2019), each a small object with explicit per-shard state:

* :class:`AsyFPG`: asynchronous SVRG in full precision (the baseline);
* :class:`AsyLPG`: models pulled at the fewest bits with ``E||Q(x)-x||^2 <= mu ||x - x~||^2``,
  gradients pushed at ``bits`` bits;
* :class:`SparseAsyLPG`: gradients sparsified without bias to a budget ``phi``, then quantized;
* :class:`AccAsyLPG`: Katyusha-style momentum on top.

:func:`run` starts server shards and workers as Ray actors (local Ray by default, an existing
cluster given ``address``) and returns a :class:`RunResult` in which every message's bits are
counted from its real packed payload, with staleness, dead workers and dropped messages recorded.

Example::

    from hvd_compress.ps import AsyFPG, AsyLPG, run, synthetic_logistic
    problem = synthetic_logistic(n_samples=2000, dim=1000)
    for alg in (AsyFPG(step_size=1.0), AsyLPG(step_size=1.0, bits=8, mu=0.5)):
        r = run(problem, alg, num_workers=4, num_shards=2, target_loss=0.4)
        print(alg.name, r.bits_to_target, r.final_loss, r.staleness["mean"])

``python -m hvd_compress.ps.experiment --quick`` runs the paper-style comparison. Nothing here
imports Ray, torch or Horovod at package import.
"""

from hvd_compress._lazy import lazy_attributes as _lazy_attributes
from hvd_compress.ps.acc_asylpg import AccAsyLPG
from hvd_compress.ps.asyfpg import AsyFPG
from hvd_compress.ps.asylpg import AsyLPG
from hvd_compress.ps.problems import MLP, LogisticRegression, digits_mlp, synthetic_logistic
from hvd_compress.ps.sparse_asylpg import SparseAsyLPG
from hvd_compress.ps.svrg import AsyncSVRG
from hvd_compress.ps.wire import HEADER_BITS, MalformedMessage, Message

__all__ = [
    "AsyncSVRG",
    "AsyFPG",
    "AsyLPG",
    "SparseAsyLPG",
    "AccAsyLPG",
    "run",
    "RunResult",
    "ServerShard",
    "Worker",
    "ensure_ray",
    "MalformedMessage",
    "Message",
    "HEADER_BITS",
    "LogisticRegression",
    "MLP",
    "synthetic_logistic",
    "digits_mlp",
]

# Ray is imported on first use of the runtime, and every submodule (ps.wire, ps.experiment, ...)
# on attribute access.
_RUNTIME = ("run", "RunResult", "ServerShard", "Worker", "ensure_ray")
__getattr__, __dir__ = _lazy_attributes(__name__, __path__, dict.fromkeys(_RUNTIME, "hvd_compress.ps.runtime"), __all__)
