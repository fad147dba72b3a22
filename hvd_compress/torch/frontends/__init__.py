"""The frontends layer for PyTorch: what users call.

Horovod's APIs (:mod:`.optimizer`'s ``DistributedOptimizer``, :mod:`.stock`, the engine behind
``hvd.DistributedOptimizer(compression=codec)``, :mod:`.wrapped`, :mod:`.broadcast`), the DDP
communication hook (:mod:`.ddp`), Lightning (:mod:`.lightning`), Horovod elastic state
(:mod:`.elastic`), TensorBoard scalars (:mod:`.tensorboard`) and decentralized SwarmSGD (:mod:`.swarm`).

The layers (``tests/test_import_graph.py``): core -> codecs -> exchange -> frontends -> tools. A
frontend may import the exchange (``hvd_compress.torch.exchange``, ``fusion``, ``collectives``, ...)
and the codecs, never the reverse. The old paths (``hvd_compress.torch.ddp``, ...) are shims that
give these same modules.
"""

from hvd_compress._lazy import lazy_attributes as _lazy_attributes

# Submodules on attribute access (hc.frontends.ddp), imported on first use.
__getattr__, __dir__ = _lazy_attributes(__name__, __path__)
