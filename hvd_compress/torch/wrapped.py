"""Moved to :mod:`hvd_compress.torch.frontends.wrapped`; this path stays importable (same module)."""

import sys

from hvd_compress.torch.frontends import wrapped as _moved

sys.modules[__name__] = _moved
