"""The frontends layer for TensorFlow: what users call.

Horovod's APIs (:mod:`.stock`, the engine behind ``hvd.DistributedGradientTape(compression=codec)``
and Horovod's Keras optimizer, :mod:`.reduce`'s ``allreduce_gradients`` / ``GradientReducer``,
:mod:`.broadcast`), Keras (:mod:`.keras`: ``DistributedOptimizer`` and callbacks) and Horovod
elastic state (:mod:`.elastic`).

The layers (``tests/test_import_graph.py``): core -> codecs -> exchange -> frontends -> tools. A
frontend may import the exchange (``hvd_compress.tensorflow.exchange``, ``collectives``, ...) and
the codecs, never the reverse. The old paths (``hvd_compress.tensorflow.keras``, ...) are shims
that give these same modules.
"""

from hvd_compress._lazy import lazy_attributes as _lazy_attributes

# Submodules on attribute access (hct.frontends.keras), imported on first use.
__getattr__, __dir__ = _lazy_attributes(__name__, __path__)
