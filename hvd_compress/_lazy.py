"""Submodules on attribute access (PEP 562), so ``import hvd_compress.tensorflow as hct`` is enough
for ``hct.keras.DistributedOptimizer`` and ``import hvd_compress.torch as hc`` for ``hc.ddp``.

A submodule is imported the first time its name is read, never at package import: Horovod, Ray and
TensorFlow stay unimported until a module that needs them is used.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Callable, Dict, Iterable, List, Optional, Tuple


def public_submodules(package_path: Iterable[str]) -> List[str]:
    """Names of the package's submodules and subpackages, without private (``_``) ones."""
    return sorted(info.name for info in pkgutil.iter_modules(list(package_path)) if not info.name.startswith("_"))


def lazy_attributes(
    package: str, package_path: Iterable[str], attributes: Optional[Dict[str, str]] = None, public: Iterable[str] = ()
) -> Tuple[Callable[[str], object], Callable[[], List[str]]]:
    """``(__getattr__, __dir__)`` for a package.

    ``attributes`` maps a name to the module it is taken from (imported on first use); every
    public submodule found next to the package's ``__init__`` is importable by attribute too.
    """
    attributes = dict(attributes or {})
    submodules = public_submodules(package_path)

    def __getattr__(name: str):
        if name in attributes:
            return getattr(importlib.import_module(attributes[name]), name)
        if name in submodules:
            return importlib.import_module(f"{package}.{name}")  # also binds it on the package
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__() -> List[str]:
        names = set(importlib.import_module(package).__dict__) | set(public)
        return sorted(names | set(attributes) | set(submodules))

    return __getattr__, __dir__
