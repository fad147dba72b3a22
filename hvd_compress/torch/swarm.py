"""Moved to :mod:`hvd_compress.torch.frontends.swarm`; this path stays importable (same module)."""

import sys

from hvd_compress.torch.frontends import swarm as _moved

sys.modules[__name__] = _moved
