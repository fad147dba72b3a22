"""Moved to :mod:`hvd_compress.torch.frontends.swarm`; this path stays importable (same module)."""

from hvd_compress._moved import alias
from hvd_compress.torch.frontends import swarm as _moved

alias(__name__, _moved)
