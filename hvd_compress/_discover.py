"""Finding a framework's codec classes by importing its ``codecs`` package's modules (issue #19:
one definition per codec, no hand-written lists to keep in step).

A codec class is a public class defined in one of the package's modules that subclasses the
framework's ``Codec`` base. The package exports all of them (``hvd_compress.torch.codecs.QSGD``);
the spec catalog builds from those whose ``name`` is a built-in codec's registered name
(``"qsgd"``), so helpers such as ``OneBitQuantizer`` (``name = "onebit_quantizer"``) are exported
but not buildable from a spec string. Framework-neutral: imports no framework itself.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Collection, Dict, Iterable


def codec_classes(package: str, package_path: Iterable[str], base: type) -> Dict[str, type]:
    """Public name -> class, for every ``base`` subclass defined in a module of ``package``
    (modules in name order, classes in definition order)."""
    found: Dict[str, type] = {}
    for info in sorted(pkgutil.iter_modules(list(package_path)), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package}.{info.name}")
        for name, obj in vars(module).items():
            if (
                not name.startswith("_")
                and inspect.isclass(obj)
                and obj.__module__ == module.__name__
                and issubclass(obj, base)
            ):
                found[name] = obj
    return found


def named_codecs(classes: Iterable[type], names: Collection[str]) -> Dict[str, type]:
    """Spec name -> class, for the classes whose ``name`` is one of ``names``; a name claimed
    by two classes is an error (a subclass must set its own ``name``)."""
    out: Dict[str, type] = {}
    for cls in classes:
        name = getattr(cls, "name", None)
        if isinstance(name, str) and name in names:
            if name in out and out[name] is not cls:
                raise TypeError(f"codec name {name!r} is claimed by {out[name].__qualname__} and {cls.__qualname__}")
            out[name] = cls
    return out
