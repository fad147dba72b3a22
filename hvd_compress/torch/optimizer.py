"""Moved to :mod:`hvd_compress.torch.frontends.optimizer`; this path stays importable (same module)."""

import sys

from hvd_compress.torch.frontends import optimizer as _moved

sys.modules[__name__] = _moved
