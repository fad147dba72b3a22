"""Run an unmodified Horovod training script with compression chosen from outside.

::

    HVD_COMPRESS="qsgd:bits=4" horovodrun -np 2 python -m hvd_compress.run train.py --epochs 3
    HVD_COMPRESS="onebit" horovodrun -np 4 python -m hvd_compress.run -m mypkg.train --lr 0.1

The script runs as ``__main__`` (``runpy``, with its own ``sys.argv`` and its folder first on
``sys.path``, as ``python train.py`` would). Before it starts, the launcher hooks the Horovod
entry points a script uses to build its distributed optimizer, so that they receive
``compression=<codec from HVD_COMPRESS>``:

* ``horovod.torch.DistributedOptimizer``            -> ``hvd_compress.torch.from_spec(spec)``
* ``horovod.tensorflow.DistributedGradientTape``    -> ``hvd_compress.tensorflow.from_spec(spec)``
* ``horovod.tensorflow.DistributedOptimizer``       -> the same
* ``horovod.tensorflow.keras.DistributedOptimizer`` -> the same (tf-keras)

Only where the script passes no compression, or Horovod's ``Compression.none``: a script that
asks for something else (``Compression.fp16``, its own codec) keeps it, and the launcher says so
once on stderr. Each hooked optimizer gets its own codec instance (codec state is per optimizer).
``DistributedGradientTape`` is different: a TF2 script wraps a new tape every step, usually inside
its ``tf.function`` step (traced more than once), so every tape of the process shares one codec,
built at the first call: its state (TF variables, keyed by variable name) must outlive the tape,
and ``tf.function`` refuses variables created on a retrace. The hooks go in when the script
imports the Horovod module (an import hook), so a TF script never imports torch and the other way
round. ``horovod.keras`` (stand-alone Keras) is not hooked.

At exit every rank logs one line per framework used, to stderr::

    [hvd_compress.run] rank 0 torch wire_stats {"qsgd(bits=4,...)": {"values": ..., "bits_per_value": 4.1, ...}}

(the JSON of :func:`hvd_compress.torch.wire_stats` / :func:`hvd_compress.tensorflow.wire_stats`:
bytes put on the wire per codec). ``HVD_COMPRESS`` must be set: ``none`` runs uncompressed through
the same path, for an A/B comparison; a malformed spec fails before the script starts, an unknown
codec where the optimizer is built (with the list of codecs). A script's own ``--fp16-allreduce``
style flag still works: it passes ``Compression.fp16``, which is kept.
"""

from __future__ import annotations

import atexit
import functools
import importlib.abc
import inspect
import json
import os
import runpy
import sys
from typing import Callable, Dict, List, Optional

ENV = "HVD_COMPRESS"
PREFIX = "[hvd_compress.run]"

# module -> (hooked attributes, the hvd_compress frontend whose from_spec builds the codec)
TARGETS: Dict[str, tuple] = {
    "horovod.torch": (("DistributedOptimizer",), "hvd_compress.torch"),
    "horovod.tensorflow": (("DistributedGradientTape", "DistributedOptimizer"), "hvd_compress.tensorflow"),
    "horovod.tensorflow.keras": (("DistributedOptimizer",), "hvd_compress.tensorflow"),
}
# entry points called once per step, not once per run: one codec for all their calls (see above)
SHARED_CODEC = {"horovod.tensorflow.DistributedGradientTape"}


def say(msg: str) -> None:
    print(f"{PREFIX} {msg}", file=sys.stderr, flush=True)


def _is_no_compression(value, module) -> bool:
    if value is None:
        return True
    compression = getattr(module, "Compression", None)
    return compression is not None and value is getattr(compression, "none", object())


def wrap(original: Callable, module, spec: str, frontend: str, where: str, shared: bool = False) -> Callable:
    """``original`` with ``compression`` replaced by ``from_spec(spec)`` when it is none: a new
    codec per call, or with ``shared`` one codec (built at the first call) for every call."""
    signature = inspect.signature(original)
    warned: List[bool] = []
    codecs: list = []

    def codec():
        if shared and codecs:
            return codecs[0]
        made = getattr(importlib_module(frontend), "from_spec")(spec)
        if shared:
            codecs.append(made)
        return made

    @functools.wraps(original)
    def hooked(*args, **kwargs):
        bound = signature.bind_partial(*args, **kwargs)
        given = bound.arguments.get("compression")
        if _is_no_compression(given, module):
            bound.arguments["compression"] = codec()
            return original(*bound.args, **bound.kwargs)
        if not warned:
            warned.append(True)
            say(f"{where} got compression={given!r} from the script; keeping it ({ENV}={spec!r} not applied)")
        return original(*args, **kwargs)

    if frontend == "hvd_compress.tensorflow":  # TF is imported already: Horovod's TF module needs it
        import tensorflow as tf

        # called inside the script's tf.function step: AutoGraph has nothing to convert here (and
        # would warn that it cannot read importlib's frozen source)
        hooked = tf.autograph.experimental.do_not_convert(hooked)
    hooked.__hvd_compress_original__ = original
    return hooked


def importlib_module(name: str):
    import importlib

    return importlib.import_module(name)


def patch_module(module, spec: str) -> List[str]:
    """Hook ``module``'s targets in place (idempotent); returns the hooked names."""
    names, frontend = TARGETS[module.__name__]
    done = []
    for name in names:
        original = getattr(module, name, None)
        if original is None or hasattr(original, "__hvd_compress_original__"):
            continue
        where = f"{module.__name__}.{name}"
        setattr(module, name, wrap(original, module, spec, frontend, where, shared=where in SHARED_CODEC))
        done.append(name)
    return done


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds the target modules through the other finders, and hooks them once they have run."""

    def __init__(self, spec: str):
        self.spec = spec

    def find_spec(self, fullname, path, target=None):
        if fullname not in TARGETS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            found = finder.find_spec(fullname, path, target)
            if found is not None and found.loader is not None:
                loader, codec_spec = found.loader, self.spec

                class Loader(importlib.abc.Loader):
                    def create_module(self, module_spec):
                        return loader.create_module(module_spec)

                    def exec_module(self, module):
                        loader.exec_module(module)
                        patch_module(module, codec_spec)

                    def __getattr__(self, name):  # resource readers and the like
                        return getattr(loader, name)

                found.loader = Loader()
                return found
        return None


def install(spec: str) -> None:
    """Hook the Horovod entry points (now for modules already imported, else on import)."""
    for name in TARGETS:
        if name in sys.modules:
            patch_module(sys.modules[name], spec)
    if not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport(spec))


def rank() -> str:
    for var in ("HOROVOD_RANK", "OMPI_COMM_WORLD_RANK", "PMI_RANK", "RANK"):
        if os.environ.get(var):
            return os.environ[var]
    return "0"


def log_wire_stats() -> None:
    """One line per framework the script used (its hvd_compress frontend was imported)."""
    for framework, module in (("torch", "hvd_compress.torch"), ("tensorflow", "hvd_compress.tensorflow")):
        if module in sys.modules:
            stats = sys.modules[module].wire_stats()
            say(f"rank {rank()} {framework} wire_stats {json.dumps(stats, sort_keys=True)}")


def validate(spec: str) -> None:
    """Fail before the script starts on a malformed spec. (An unknown codec or option fails where
    the hooked call builds the codec, on every rank alike, with the list of what exists; checking
    it here would import torch into TF scripts.)"""
    from hvd_compress.spec import parse

    parse(spec)


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    usage = (
        f"usage: {ENV}=SPEC python -m hvd_compress.run SCRIPT.py [ARGS...]\n"
        f"       {ENV}=SPEC python -m hvd_compress.run -m MODULE [ARGS...]\n"
        f"e.g.   {ENV}='qsgd:bits=4' horovodrun -np 2 python -m hvd_compress.run train.py"
    )
    if not argv or argv[0] in ("-h", "--help") or (argv[0] == "-m" and len(argv) < 2):
        print(usage + "\n\n" + __doc__, file=sys.stderr)
        return 2
    spec = os.environ.get(ENV, "").strip()
    if not spec:
        say(f"{ENV} is not set; set it to a codec spec such as 'qsgd:bits=4' (or 'none')\n{usage}")
        return 2
    try:
        validate(spec)
    except ValueError as exc:
        say(str(exc))
        return 2
    install(spec)
    atexit.register(log_wire_stats)
    if argv[0] == "-m":
        sys.argv = [argv[1], *argv[2:]]
        runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
    else:
        script = argv[0]
        sys.argv = [script, *argv[1:]]
        sys.path.insert(0, os.path.dirname(os.path.abspath(script)))
        runpy.run_path(script, run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
