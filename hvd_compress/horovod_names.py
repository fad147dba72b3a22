"""The one module of hvd_compress that reads other stack frames: the name of a gradient that
Horovod's stock ``Compressor`` API hands to a codec.

Why it exists. Horovod calls ``compression.compress(tensor)`` with the gradient alone: no name,
no parameter or variable, no optimizer, and Horovod 0.28.1 offers no public way to learn them.
Codec state (error-feedback residuals, RNG streams) must be keyed by a name that is the same on
every rank and every step, and the optimizer's ``state_dict`` must carry it. So the stock-API
engines (:mod:`hvd_compress.torch.frontends.stock`, :mod:`hvd_compress.tensorflow.frontends.stock`) ask this module,
which looks in the frames of Horovod's functions that called ``compress`` for the names Horovod
itself holds there. No other module reads frames (``tests/test_import_graph.py`` checks that).

What it relies on, in Horovod 0.28.1 (``tests/test_horovod_names.py`` pins each point against the
installed Horovod, so an upgrade that changes one fails there, loudly):

* torch, :func:`torch_parameter_name`:
  ``horovod.torch.optimizer._DistributedOptimizer._allreduce_grad_async(self, p)`` calls
  ``self._compression.compress(p.grad)`` with the parameter in its local ``p``;
  ``_grouped_allreduce_grad_async(self, ps)`` calls it in a comprehension ``for p in ps`` (a frame
  of its own on Python 3.11, inlined into the method's frame from 3.12); in both, ``self`` is the
  optimizer, whose private dict ``_parameter_names`` (parameter -> name, built in ``__init__``
  from ``named_parameters``) names ``p``.
* TensorFlow, :func:`tf_gradient_variable`: the ``allreduce_grads(grads, vars=None, ...)`` that
  ``horovod.tensorflow._make_cached_allreduce_grads_fn`` builds (for ``DistributedGradientTape``
  and the tf-keras ``DistributedOptimizer``; autograph renames it ``tf__allreduce_grads`` when
  it runs inside ``tf.function``) holds the gradients and their variables in its locals ``grads``
  and ``vars``; ``horovod.tensorflow.allreduce`` and ``grouped_allreduce``, which call
  ``compression.compress``, hold the reduction in their local ``op`` beside ``compression``.

When it fails (a caller other than those, or a Horovod that renamed them), the lookups return
``None``. The engines then key state by call order (``anonymous.<i>``; under ``tf.function``
the graph tensor's name) and warn once when the codec carries error-feedback state, whose
residuals would then follow call order rather than names. The exchange and its wire bytes are
the same either way; only which state a gradient meets depends on the name.

Both lookups start at the first frame outside hvd_compress (the codec's ``compress`` and the
engine are above it), so they do not depend on how many of our own calls lie in between.
"""

from __future__ import annotations

import sys
from types import FrameType
from typing import Any, Optional, Tuple

# How far up from Horovod's caller of compress() each lookup looks.
TORCH_FRAMES = 8
TF_FRAMES = 80  # tf.function and autograph put many frames between allreduce_grads and compress


def _first_frame_outside_hvd_compress() -> Optional[FrameType]:
    frame: Optional[FrameType] = sys._getframe(1)
    while frame is not None and str(frame.f_globals.get("__name__", "")).split(".")[0] == "hvd_compress":
        frame = frame.f_back
    return frame


def torch_parameter_name(tensor) -> Tuple[Optional[str], Any]:
    """``(parameter name, Horovod optimizer)`` of the gradient ``tensor`` that Horovod's torch
    ``DistributedOptimizer`` passed to ``compress``; ``(None, None)`` where not found."""
    import torch  # the caller, hvd_compress.torch.frontends.stock, has imported it already

    frame = _first_frame_outside_hvd_compress()
    param = None
    for _ in range(TORCH_FRAMES):
        if frame is None:
            break
        loc = frame.f_locals
        p = loc.get("p")
        if param is None and isinstance(p, torch.Tensor) and (p.grad is tensor or "name" in loc):
            param = p
        opt = loc.get("self")
        names = getattr(opt, "_parameter_names", None)
        if isinstance(names, dict):
            if param is None:
                param = next((q for q in names if q.grad is tensor), None)
            if param is not None and param in names:
                return names[param], opt
        frame = frame.f_back
    return None, None


def tf_gradient_variable(tensor) -> Tuple[Any, Any]:
    """``(variable, Horovod op)`` of the gradient ``tensor`` that Horovod's TensorFlow
    ``allreduce_grads`` passed (through ``allreduce``) to ``compress``; each ``None`` where not
    found (a bare ``hvd.allreduce(t, compression=codec)`` has an op but no variable)."""
    variable = op = None
    frame = _first_frame_outside_hvd_compress()
    for _ in range(TF_FRAMES):
        if frame is None:
            break
        code, loc = frame.f_code, frame.f_locals
        # (autograph renames Horovod's functions tf__<name> when the caller is a tf.function)
        fname = code.co_name[4:] if code.co_name.startswith("tf__") else code.co_name
        if op is None and fname in ("allreduce", "grouped_allreduce") and "op" in loc and "compression" in loc:
            op = loc["op"]
        if fname == "allreduce_grads" and "grads" in loc:
            grads, variables = loc.get("grads"), loc.get("vars")
            if variables is not None:
                for g, v in zip(grads, variables):
                    if g is tensor:
                        variable = v
                        break
            break
        frame = frame.f_back
    return variable, op
