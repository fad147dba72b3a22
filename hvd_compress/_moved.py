"""Old module paths kept importable after a move, as the *same* module objects.

A module that moved (e.g. ``hvd_compress.torch.ddp`` -> ``hvd_compress.torch.frontends.ddp``)
leaves a shim file at its old path that puts the moved module in ``sys.modules`` under the old
name, so ``import old``, ``from package import old``, ``mock.patch("old.name")`` and pickles that
name a class by its old module all reach the one module (one set of globals, one class object).

A moved *package* needs more: once ``sys.modules[old]`` is the new package, Python looks for
``old.sub`` in the new package's ``__path__`` and, finding ``sub.py`` there, would load it a second
time under the old name (a second module, a second class). :func:`alias_package` registers ``old``
-> ``new`` with a finder that answers ``old.sub`` with the module ``new.sub``, imported on first
use like any submodule (a shim imports no more than the old package did).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import ModuleType
from typing import Dict, Optional, Sequence

_PACKAGES: Dict[str, str] = {}  # old package name -> new package name


def alias(old: str, module: ModuleType) -> ModuleType:
    """Make ``module`` importable as ``old`` too (the same object). Call it from the shim at
    ``old``'s path as ``alias(__name__, moved_module)``."""
    sys.modules[old] = module
    return module


def alias_package(old: str, package: ModuleType) -> ModuleType:
    """:func:`alias` for a package, its submodules included (``old.sub`` is ``package.sub``)."""
    _PACKAGES[old] = package.__name__
    if not any(isinstance(f, _AliasFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _AliasFinder())
    return alias(old, package)


def moved_name(name: str) -> Optional[str]:
    """The module an old submodule name stands for (``None``: not under an aliased package)."""
    for old, new in _PACKAGES.items():
        if name.startswith(old + "."):
            return new + name[len(old) :]
    return None


class _AliasFinder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Optional[Sequence[str]] = None, target: Optional[ModuleType] = None):
        new = moved_name(fullname)
        if new is None or importlib.util.find_spec(new) is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new))


class _AliasLoader(importlib.abc.Loader):
    """Loads ``old.sub`` by importing ``new.sub`` and handing back that module."""

    def __init__(self, new: str) -> None:
        self.new = new
        self.spec: Optional[importlib.machinery.ModuleSpec] = None

    def create_module(self, spec):
        module = importlib.import_module(self.new)
        self.spec = module.__spec__
        return module

    def exec_module(self, module: ModuleType) -> None:
        # module_from_spec set the alias's spec on the moved module; give it its own back, so
        # importlib.reload and ``__spec__.name`` keep naming the module where it lives.
        module.__spec__ = self.spec
