"""Moved to :mod:`hvd_compress.tensorflow.frontends.reduce`; this path stays importable (same module)."""

import sys

from hvd_compress.tensorflow.frontends import reduce as _moved

sys.modules[__name__] = _moved
