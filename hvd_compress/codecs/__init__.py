"""The built-in codecs' wire formats, as numpy references (one file per codec family).

Each class here is a registered :class:`hvd_compress.CodecSpec` whose ``encode(x, rng)`` /
``decode(payload, numel)`` *is* the codec's wire format. The torch plain path, the native C
kernels, the Triton kernels and the TensorFlow codecs are accelerations of these, tested byte for
byte against them (``tests/test_reference_conformance.py``)::

    import numpy as np, hvd_compress
    q = hvd_compress.reference("qsgd:bits=4,bucket_size=512")      # hvd_compress.codecs.QSGD
    payload = q.encode(np.ones(1000, np.float32), np.random.default_rng(0))
    assert payload.size == q.payload_nbytes(1000) == 504

Registered names (the same spec strings as ``hvd_compress.torch.from_spec``), every built-in codec:
payload formats ``none``, ``fp16``, ``bf16``, ``qsgd``, ``terngrad``, ``onebit``, ``efsign``,
``signsgd``, ``topk`` and ``lattice``; exchanges ``powersgd``, ``gradiveq``, ``doublesqueeze``. For
``onebit``, ``efsign`` and ``topk`` the format is the quantizer's: error feedback (and DoubleSqueeze)
wrap a codec without changing its bytes. ``lattice`` (SwarmSGD's gossip codec, torch only) decodes
relative to the receiver's own vector: ``encode(x, rng, eps=..., seed=..., noise=...)`` and
``decode_relative(payload, y)`` instead of ``decode``.

The multi-round codecs, ``powersgd``, ``gradiveq`` and ``doublesqueeze`` (a wrapper: worker and
server error feedback around any codec here), have no single self-contained payload: their
references define the whole exchange instead. ``reduce(grads, state, shape)`` takes every rank's
gradient (a list, by rank) and the codec's state, and returns a
:class:`~hvd_compress.codecs.reduction.Reduction`: the average every rank ends with, the new
state, and the bytes each rank hands to each collective round::

    ref = hvd_compress.reference("doublesqueeze:codec=onebit")
    step = ref.reduce([g0, g1, g2], state=None)        # three ranks' gradients
    step.values, step.state, step.rounds               # rounds: [("a2a", [...]), ("ag", [...])]

The frameworks build their own classes for these names; the references are what they are
checked against, and what a host-side tool (a parameter server, a log inspector) can decode
payloads with, numpy only. Importing this package imports no framework.

Every public ``CodecSpec`` subclass defined in a module of this package is exported, found by
importing the modules (:mod:`hvd_compress._discover`), which also registers them: a new built-in
codec is one more file here.
"""

from hvd_compress._discover import codec_classes as _codec_classes
from hvd_compress.core.spec import CodecSpec as _CodecSpec

_CLASSES = _codec_classes(__name__, __path__, _CodecSpec)
globals().update(_CLASSES)
__all__ = list(_CLASSES)
