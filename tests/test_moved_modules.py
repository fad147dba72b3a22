"""Spec: the frontends moved to ``hvd_compress/<framework>/frontends/`` and their old paths still
work, as the same module objects (one module, one set of globals, one class per name).

* ``import old`` and ``import new`` give the same module, in either order, submodules of the old
  ``hvd_compress.tensorflow.keras`` package included;
* the package-level names (``hc.DistributedOptimizer``, the ``_LAZY`` tables) resolve;
* classes pickle by their new module, and a pickle written before the move (naming the old module)
  loads the same class.
"""

import importlib
import pickle

import pytest

from test_lazy_imports import run_fresh

TORCH_MOVED = ["ddp", "optimizer", "stock", "lightning", "wrapped", "elastic", "tensorboard", "broadcast", "swarm"]
TF_MOVED = ["stock", "elastic", "broadcast", "reduce", "keras", "keras.callbacks"]
MOVED = [(f"hvd_compress.torch.{m}", f"hvd_compress.torch.frontends.{m}") for m in TORCH_MOVED] + [
    (f"hvd_compress.tensorflow.{m}", f"hvd_compress.tensorflow.frontends.{m}") for m in TF_MOVED
]
# What importing a moved module needs beyond the package's own requirements.
NEEDS = {"lightning": "lightning", "elastic": "horovod", "tensorflow": "tensorflow"}


def import_or_skip(name: str):
    for part, requirement in NEEDS.items():
        if part in name.split("."):
            pytest.importorskip(requirement)
    return importlib.import_module(name)


@pytest.mark.parametrize("old,new", MOVED, ids=[old for old, _ in MOVED])
def test_old_path_is_the_moved_module(old, new):
    pytest.importorskip("torch" if ".torch." in new else "tensorflow")
    moved = import_or_skip(new)
    assert importlib.import_module(old) is moved
    assert moved.__name__ == new and moved.__spec__.name == new
    parent, _, leaf = old.rpartition(".")
    assert getattr(importlib.import_module(parent), leaf) is moved  # from parent import leaf


def test_old_paths_imported_first_give_one_module_each():
    # In a fresh interpreter, so the old names are the first ever imported (above, the new ones may
    # be): a moved module loaded twice, once per name, would show as two modules from one file.
    pytest.importorskip("tensorflow")
    pytest.importorskip("torch")
    out = run_fresh("""
        import sys
        import hvd_compress.tensorflow.keras.callbacks as old_callbacks
        from hvd_compress.tensorflow.keras import callbacks
        # no more than the old package imported: TF, not Horovod (the torch codecs do import it)
        assert not any(m.split('.')[0] == 'horovod' for m in sys.modules), 'the keras shim imported Horovod'
        import hvd_compress.torch.ddp as old_ddp
        from hvd_compress.torch import tensorboard
        import hvd_compress.tensorflow.frontends.keras.callbacks as new_callbacks
        import hvd_compress.torch.frontends.ddp as new_ddp
        import hvd_compress.torch.frontends.tensorboard as new_tensorboard
        assert old_callbacks is callbacks is new_callbacks
        assert old_ddp is new_ddp and tensorboard is new_tensorboard
        assert sys.modules['hvd_compress.tensorflow.keras'] is sys.modules['hvd_compress.tensorflow.frontends.keras']
        by_file = {}
        for module in list(sys.modules.values()):
            path = getattr(module, '__file__', None) or ''
            if '/frontends/' in path:
                by_file.setdefault(path, set()).add(id(module))
        assert by_file and all(len(ids) == 1 for ids in by_file.values()), by_file
        print('ok')
    """)
    assert out.strip() == "ok"


def test_torch_package_names_resolve():
    hc = pytest.importorskip("hvd_compress.torch")
    for name, module in hc._LAZY.items():
        if module.endswith((".optimizer", ".broadcast")):
            pytest.importorskip("horovod.torch")
        assert getattr(hc, name) is getattr(importlib.import_module(module), name), name
    assert hc.DistributedOptimizer.__module__ == "hvd_compress.torch.frontends.optimizer"
    assert hc.ddp_comm_hook is hc.ddp.ddp_comm_hook is hc.frontends.ddp.ddp_comm_hook
    assert hc.SwarmSGD is importlib.import_module("hvd_compress.torch.swarm").SwarmSGD


def test_tensorflow_package_names_resolve():
    pytest.importorskip("tensorflow")
    import hvd_compress.tensorflow as hct

    for name, module in hct._LAZY.items():
        assert getattr(hct, name) is getattr(importlib.import_module(module), name), name
    assert hct.GradientReducer.__module__ == "hvd_compress.tensorflow.frontends.reduce"
    assert hct.keras is hct.frontends.keras
    assert (
        hct.keras.DistributedOptimizer is importlib.import_module("hvd_compress.tensorflow.keras").DistributedOptimizer
    )


@pytest.mark.parametrize(
    "old,new,name",
    [
        ("hvd_compress.torch.ddp", "hvd_compress.torch.frontends.ddp", "DDPHookState"),
        ("hvd_compress.torch.swarm", "hvd_compress.torch.frontends.swarm", "SwarmSGD"),
        ("hvd_compress.torch.wrapped", "hvd_compress.torch.frontends.wrapped", "WrappedOptimizer"),
        ("hvd_compress.tensorflow.reduce", "hvd_compress.tensorflow.frontends.reduce", "GradientReducer"),
        (
            "hvd_compress.tensorflow.keras.callbacks",
            "hvd_compress.tensorflow.frontends.keras.callbacks",
            "CompressionStatsCallback",
        ),
    ],
)
def test_classes_pickle_by_the_new_module_and_old_pickles_still_load(old, new, name):
    pytest.importorskip("torch" if ".torch." in new else "tensorflow")
    cls = getattr(importlib.import_module(new), name)
    assert pickle.loads(pickle.dumps(cls)) is cls
    assert cls.__module__ == new
    written_before_the_move = f"c{old}\n{name}\n.".encode()  # protocol 0: GLOBAL old.module name
    assert pickle.loads(written_before_the_move) is cls
