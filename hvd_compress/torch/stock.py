"""Moved to :mod:`hvd_compress.torch.frontends.stock`; this path stays importable (same module)."""

import sys

from hvd_compress.torch.frontends import stock as _moved

sys.modules[__name__] = _moved
