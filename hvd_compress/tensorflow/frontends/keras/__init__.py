"""Keras frontend: a distributed optimizer for Keras 3 and tf-keras, and callbacks.

Horovod's own ``horovod.tensorflow.keras.DistributedOptimizer`` fails on Keras 3 (the default
since TF 2.16: ``'Variable' object has no attribute 'ref'``). This one works with ``model.fit``
on both Keras 3 and tf-keras (``TF_USE_LEGACY_KERAS=1``), over Horovod's TensorFlow collectives::

    import keras, horovod.tensorflow as hvd
    import hvd_compress.tensorflow.frontends.keras as hck

    hvd.init()
    keras.utils.set_random_seed(0)                       # same initial weights on every rank
    model = make_model()
    opt = hck.DistributedOptimizer(keras.optimizers.SGD(0.05, momentum=0.9), compression="onebit")
    model.compile(optimizer=opt, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x_shard, y_shard, batch_size=32, epochs=10,
              callbacks=[hck.callbacks.QuantizedBroadcastCallback(root_rank=0, bits=8),
                         hck.callbacks.CompressionStatsCallback()],
              verbose=1 if hvd.rank() == 0 else 0)

How to tune: see ``docs/tensorflow.md`` (which codec, ``min_numel``, checkpointing).
"""

from __future__ import annotations

from typing import Optional

from hvd_compress._lazy import lazy_attributes as _lazy_attributes
from hvd_compress.tensorflow.codecs.base import Codec
from hvd_compress.tensorflow.frontends.reduce import GradientReducer


def _is_keras3_optimizer(optimizer) -> bool:
    try:
        import keras
    except ImportError:  # pragma: no cover
        return False
    if not str(getattr(keras, "__version__", "0")).startswith(("3", "4")):
        return False
    return isinstance(optimizer, keras.optimizers.Optimizer)


class _Common:
    """Shared by both flavours; mixed in front of the user's optimizer class."""

    def _hvdc_setup(self, reducer: GradientReducer) -> None:
        # Assigning a trackable codec makes it a checkpoint dependency of the optimizer, so
        # tf.train.Checkpoint(optimizer=opt) saves the residuals too.
        self._hvdc_reducer = reducer
        self.hvd_compress = reducer.codec

    @property
    def compression(self) -> Codec:
        """The codec this optimizer averages gradients with."""
        return self._hvdc_reducer.codec

    def _hvdc_reduce(self, grads, variables):
        return self._hvdc_reducer(list(grads), list(variables))

    def _hvdc_build(self, variables):
        if variables:
            self._hvdc_reducer.build(list(variables))


class _Keras3(_Common):
    def build(self, variables):
        super().build(variables)
        self._hvdc_build(variables)

    def apply(self, grads, trainable_variables=None):
        variables = trainable_variables
        if variables is None:
            if not self.built:
                return super().apply(grads, trainable_variables)  # Keras raises its own error
            variables = self._trainable_variables
        grads = self._hvdc_reduce(grads, variables)
        return super().apply(grads, trainable_variables)


class _TFKeras(_Common):
    def build(self, var_list):
        parent = getattr(super(), "build", None)  # tf-keras' legacy optimizers have no build()
        if parent is not None:
            parent(var_list)
        self._hvdc_build(var_list)

    def apply_gradients(self, grads_and_vars, *args, **kwargs):
        pairs = list(grads_and_vars)
        grads = self._hvdc_reduce([g for g, _ in pairs], [v for _, v in pairs])
        return super().apply_gradients(list(zip(grads, [v for _, v in pairs])), *args, **kwargs)


def DistributedOptimizer(
    optimizer,
    compression: "Codec | str" = "none",
    process_set=None,
    name: Optional[str] = None,
    bucket_bytes: Optional[int] = None,
):
    """Wrap a Keras optimizer (Keras 3 or tf-keras) so it averages gradients over Horovod ranks
    with ``compression`` (a codec or spec string: ``"qsgd:bits=4"``, ``"onebit"``,
    ``"doublesqueeze:codec=onebit"``, ...) before applying them.

    Returns a new optimizer of a subclass of ``type(optimizer)`` built from its config, like
    Horovod's. Works with ``model.fit`` and with ``optimizer.apply_gradients`` in custom loops.
    Codec state (residuals, RNG step counters) is created when the optimizer is built, as
    ``tf.Variable``\\ s named ``hvd_compress/residual/<variable path>``, and is a checkpoint
    dependency of the optimizer: ``tf.train.Checkpoint(model=model, optimizer=opt)`` saves and
    restores it (``model.save(...keras)`` does not; it keeps only Keras' own variables).

    ``bucket_bytes``: compressed gradients are exchanged in fused buckets of at most this many
    fp32 bytes, one collective per bucket and round (``None``: ``HVD_COMPRESS_BUCKET_BYTES`` or
    64 MiB; ``0``: one exchange per tensor); see :class:`GradientReducer` and ``docs/fusion.md``.

    Gradient accumulation (Keras 3 ``gradient_accumulation_steps``) is not supported: every
    ``apply`` communicates.
    """
    reducer = GradientReducer(compression, process_set=process_set, bucket_bytes=bucket_bytes)
    base = type(optimizer)
    mixin = _Keras3 if _is_keras3_optimizer(optimizer) else _TFKeras
    if getattr(optimizer, "gradient_accumulation_steps", None):
        raise ValueError(
            "hvd_compress: gradient_accumulation_steps is not supported by the distributed "
            "optimizer; accumulate by a larger batch or call apply less often"
        )
    cls = type(base.__name__, (mixin, base), {"__module__": base.__module__})
    config = optimizer.get_config()
    if name is not None:
        config["name"] = name
    new = cls.from_config(config)
    new._hvdc_setup(reducer)
    return new


# hck.callbacks (and any later submodule) on attribute access.
__getattr__, __dir__ = _lazy_attributes(__name__, __path__)
