"""Moved to :mod:`hvd_compress.tensorflow.frontends.keras`; this path stays importable (same
package), and so do its submodules: ``hvd_compress.tensorflow.keras.callbacks`` is
``hvd_compress.tensorflow.frontends.keras.callbacks`` (see :mod:`hvd_compress._moved`)."""

from hvd_compress._moved import alias_package
from hvd_compress.tensorflow.frontends import keras as _moved

alias_package(__name__, _moved)
