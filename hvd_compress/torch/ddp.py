"""Moved to :mod:`hvd_compress.torch.frontends.ddp`; this path stays importable (same module)."""

import sys

from hvd_compress.torch.frontends import ddp as _moved

sys.modules[__name__] = _moved
