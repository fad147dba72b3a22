"""hvd_compress.horovod_names: how the stock-API engines learn a gradient's name from Horovod's frames.

Two parts: the lookups against stand-ins shaped like Horovod's callers (no Horovod needed), and
pins on the installed Horovod: the functions, locals and attributes the lookups read (see the
module docstring), read from Horovod's code objects, so an upgrade that changes them fails here
rather than silently turning every name anonymous. The pins skip where Horovod is not installed.
"""

from __future__ import annotations

import importlib
import inspect
import types
from typing import Dict

import pytest
import torch

from hvd_compress.horovod_names import tf_gradient_variable, torch_parameter_name


# ---------------------------------------------------------------------------- the lookups
class HorovodTorchLike:
    """The parts of ``horovod.torch.optimizer._DistributedOptimizer`` that the lookup reads."""

    def __init__(self, named):
        self._parameter_names = {p: name for name, p in named}
        self._compression = types.SimpleNamespace(compress=torch_parameter_name)

    def _allreduce_grad_async(self, p):
        name = self._parameter_names.get(p)  # noqa: F841 (as in Horovod)
        tensor = p.grad
        return self._compression.compress(tensor)

    def _grouped_allreduce_grad_async(self, ps):
        return [self._compression.compress(p.grad) for p in ps]


def params():
    a, b = torch.zeros(3, requires_grad=True), torch.zeros(2, requires_grad=True)
    a.grad, b.grad = torch.ones(3), torch.ones(2)
    return a, b


def test_torch_lookup_names_the_parameter_of_the_gradient_horovod_passes():
    a, b = params()
    opt = HorovodTorchLike([("layer.weight", a), ("layer.bias", b)])
    assert opt._allreduce_grad_async(b) == ("layer.bias", opt)
    assert opt._grouped_allreduce_grad_async([a, b]) == [("layer.weight", opt), ("layer.bias", opt)]


def test_torch_lookup_without_horovod_in_the_stack_is_anonymous():
    a, _ = params()
    assert torch_parameter_name(a.grad) == (None, None)
    opt = HorovodTorchLike([])  # an optimizer that does not know the parameter
    assert opt._allreduce_grad_async(a) == (None, None)


def allreduce(tensor, op=None, compression=None):  # like horovod.tensorflow.allreduce
    return compression.compress(tensor)


def allreduce_grads(grads, vars=None):  # like the function Horovod's tape and optimizer call
    compression = types.SimpleNamespace(compress=tf_gradient_variable)
    return [allreduce(g, op="Average", compression=compression) for g in grads]


def test_tf_lookup_finds_the_variable_and_the_op():
    grads, variables = [object(), object()], ["var0", "var1"]
    assert allreduce_grads(grads, variables) == [("var0", "Average"), ("var1", "Average")]
    assert allreduce_grads(grads) == [(None, "Average"), (None, "Average")]  # no vars given
    assert tf_gradient_variable(object()) == (None, None)


# ---------------------------------------------------------------------------- pins on Horovod
def code_objects(module) -> Dict[str, types.CodeType]:
    """Every code object compiled from ``module``'s source, by dotted path (``f.<locals>.g`` is
    ``f.g``; comprehensions are ``f.<listcomp>``), read from the source so that decorators
    (Horovod's ``_cache``) do not hide the functions they wrap."""
    path = inspect.getsourcefile(module)
    assert path is not None, f"no source for {module.__name__}"
    found: Dict[str, types.CodeType] = {}

    def walk(code, prefix):
        for const in code.co_consts:
            if isinstance(const, types.CodeType):
                name = f"{prefix}{const.co_name}"
                found.setdefault(name, const)
                walk(const, name + ".")

    with open(path) as f:
        walk(compile(f.read(), path, "exec"), "")
    return found


def local_names(code: types.CodeType) -> set:
    """Locals of ``code`` and of the comprehensions in it (inlined into it from Python 3.12)."""
    names = set(code.co_varnames) | set(code.co_cellvars)
    for const in code.co_consts:
        if isinstance(const, types.CodeType) and const.co_name.startswith("<"):
            names |= local_names(const)
    return names


def called_names(code: types.CodeType) -> set:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType) and const.co_name.startswith("<"):
            names |= called_names(const)
    return names


def horovod(module: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pytest.skip(f"{module} does not import: {exc}")


def test_horovod_torch_optimizer_still_holds_what_the_torch_lookup_reads():
    codes = code_objects(horovod("horovod.torch.optimizer"))
    single = codes["_DistributedOptimizer._allreduce_grad_async"]
    assert single.co_varnames[:2] == ("self", "p"), single.co_varnames
    assert {"_compression", "compress", "_parameter_names"} <= called_names(single)
    grouped = codes["_DistributedOptimizer._grouped_allreduce_grad_async"]
    assert grouped.co_varnames[:2] == ("self", "ps") and "p" in local_names(grouped), local_names(grouped)
    assert {"_compression", "compress"} <= called_names(grouped)
    init = codes["_DistributedOptimizer.__init__"]
    assert "_parameter_names" in init.co_names and "named_parameters" in init.co_varnames
    assert "op" in init.co_names  # the engine checks opt.op (Average / Sum, not Adasum)


def test_horovod_tensorflow_still_holds_what_the_tf_lookup_reads():
    codes = code_objects(horovod("horovod.tensorflow"))
    grads_fns = [
        code
        for path, code in codes.items()
        if path.endswith(".allreduce_grads") and path.startswith("_make_cached_allreduce_grads_fn")
    ]
    assert grads_fns, sorted(p for p in codes if "allreduce_grads" in p)
    for code in grads_fns:
        assert code.co_varnames[:2] == ("grads", "vars"), code.co_varnames
    for fn in ("allreduce", "grouped_allreduce"):
        code = codes[fn]
        assert {"op", "compression"} <= set(code.co_varnames), (fn, code.co_varnames)
        assert "compress" in called_names(code), (fn, code.co_names)
