"""Moved to :mod:`hvd_compress.torch.frontends.elastic`; this path stays importable (same module)."""

import sys

from hvd_compress.torch.frontends import elastic as _moved

sys.modules[__name__] = _moved
