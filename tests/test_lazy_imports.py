"""Submodules on attribute access: importing only the package is enough, as a new user would try.

Each case runs in a fresh interpreter (``sys.modules`` must start empty of what it checks), with a
wall-clock limit, and the worktree first on ``PYTHONPATH``.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run_fresh(code: str, timeout: float = 300) -> str:
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), TF_CPP_MIN_LOG_LEVEL="2"
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=str(ROOT),
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_torch_package_alone_imports_no_frontend_and_reaches_ddp_by_attribute():
    # Where Horovod is installed the codecs subclass its Compressor (codecs/base.py), so Horovod's
    # torch module may be loaded; what must stay unimported are the frontends, until touched.
    out = run_fresh("""
        import sys
        import hvd_compress.torch as hc
        frontends = ['hvd_compress.torch.' + m for m in ('ddp', 'optimizer', 'stock', 'swarm', 'dist', 'broadcast')]
        frontends += ['hvd_compress.torch.frontends.' + m for m in ('ddp', 'optimizer', 'stock', 'swarm', 'broadcast')]
        assert not any(m in sys.modules for m in frontends), 'a frontend was imported eagerly'
        assert {'ddp', 'swarm', 'optimizer', 'codecs', 'QSGD', 'ddp_comm_hook'} <= set(dir(hc))
        assert not any(m in sys.modules for m in frontends), 'dir() imported a frontend'
        assert callable(hc.ddp.ddp_comm_hook) and hc.ddp.ddp_comm_hook is hc.ddp_comm_hook
        assert hc.swarm.SwarmSGD is hc.SwarmSGD and hc.codecs.qsgd.QSGD is hc.QSGD
        assert 'hvd_compress.torch.frontends.optimizer' not in sys.modules
        print('ok')
    """)
    assert out.strip() == "ok"


def test_top_package_reaches_subpackages_by_attribute_without_importing_them():
    run_fresh("""
        import sys
        import hvd_compress
        assert 'hvd_compress.torch' not in sys.modules and 'hvd_compress.ps' not in sys.modules
        assert {'torch', 'tensorflow', 'bench', 'ps', 'lowprec'} <= set(dir(hvd_compress))
        assert hvd_compress.ps.wire.Message is hvd_compress.ps.Message
        assert callable(hvd_compress.bench.codecs.main)
        assert hvd_compress.lowprec.__name__ == 'hvd_compress.lowprec'
        assert not any(m.split('.')[0] in ('horovod', 'ray') for m in sys.modules)
    """)


@pytest.mark.parametrize("package", ["hvd_compress", "hvd_compress.torch", "hvd_compress.ps"])
def test_unknown_attribute_raises_attribute_error_with_the_usual_message(package):
    run_fresh(f"""
        import importlib
        module = importlib.import_module({package!r})
        try:
            module.no_such_thing
        except AttributeError as error:
            assert str(error) == "module {package!r} has no attribute 'no_such_thing'", str(error)
        else:
            raise SystemExit('no AttributeError')
        assert not hasattr(module, 'no_such_thing')
    """)


def test_tensorflow_package_reaches_keras_optimizer_and_callbacks_by_attribute():
    pytest.importorskip("tensorflow")
    run_fresh("""
        import sys
        import hvd_compress.tensorflow as hct
        assert not any(m.split('.')[0] == 'horovod' for m in sys.modules), 'horovod imported eagerly'
        assert callable(hct.keras.DistributedOptimizer)
        assert hct.keras.callbacks.CompressionStatsCallback.__name__ == 'CompressionStatsCallback'
        assert {'keras', 'exchange', 'Exchange'} <= set(dir(hct)) and 'callbacks' in dir(hct.keras)
        try:
            hct.keras.no_such_thing
        except AttributeError as error:
            assert 'no attribute' in str(error)
        else:
            raise SystemExit('no AttributeError')
        assert not any(m.split('.')[0] == 'horovod' for m in sys.modules)
    """)
