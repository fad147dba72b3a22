"""Moved to :mod:`hvd_compress.torch.frontends.tensorboard`; this path stays importable (same module)."""

import sys

from hvd_compress.torch.frontends import tensorboard as _moved

sys.modules[__name__] = _moved
