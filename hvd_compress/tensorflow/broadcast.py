"""Moved to :mod:`hvd_compress.tensorflow.frontends.broadcast`; this path stays importable (same module)."""

import sys

from hvd_compress.tensorflow.frontends import broadcast as _moved

sys.modules[__name__] = _moved
