"""Moved to :mod:`hvd_compress.torch.frontends.lightning`; this path stays importable (same module)."""

import sys

from hvd_compress.torch.frontends import lightning as _moved

sys.modules[__name__] = _moved
