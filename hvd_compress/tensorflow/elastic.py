"""Moved to :mod:`hvd_compress.tensorflow.frontends.elastic`; this path stays importable (same module)."""

from hvd_compress._moved import alias
from hvd_compress.tensorflow.frontends import elastic as _moved

alias(__name__, _moved)
