"""Moved to :mod:`hvd_compress.tensorflow.frontends.broadcast`; this path stays importable (same module)."""

from hvd_compress._moved import alias
from hvd_compress.tensorflow.frontends import broadcast as _moved

alias(__name__, _moved)
