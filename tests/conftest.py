import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# Triton and TensorFlow both bundle LLVM: Triton imported after TensorFlow aborts the process, so
# the session imports Triton first (hvd_compress.torch.kernels.backend refuses the other order).
# Without a GPU the Triton kernels run under the interpreter; Triton reads this when it is imported.
if not any(Path("/dev").glob("nvidia[0-9]*")):
    os.environ.setdefault("TRITON_INTERPRET", "1")
try:
    import triton
    import triton.language  # noqa: F401
except ImportError:
    pass

# Markers. `pytest -m "not mp"` is the in-process suite (a couple of minutes); CI runs everything.
#   mp:  the test runs a multi-worker job: horovodrun, torchrun, Ray, or several worker processes.
#   gpu: the test needs CUDA; it is skipped, with the reason, where torch.cuda is unavailable.
# A test gets `mp` from the lists below (whole modules, single tests) or from using a Ray fixture;
# the guard at the bottom fails any unmarked test that starts a launcher, so none is missed.
MP_MODULES = {
    "test_ddp",
    "test_horovod",
    "test_horovod_edge_cases",
    "test_linear_mp",
    "test_qbroadcast",
    "test_ray_train",
    "test_swarm",
    "test_tf_horovod",
    "test_tf_linear_mp",
    "test_launcher_mp",
    "test_lightning_accelerate_mp",
    "test_triton_mp",
    "test_cluster_mp",
    "test_failing_ranks",
    "test_elastic_cluster",
    "test_fusion_mp",
}
MP_TESTS = {
    "test_bench_cli::test_step_smoke_two_workers_tiny_model",  # `bench step`: 2 workers in netns
    "test_native::test_build_command_is_safe_to_run_concurrently",  # several builders at once
    "test_native::test_forked_children_run_the_kernels_single_threaded",  # fork in a child
    "test_gpu_setup::test_gpu_check_dry_mode_runs_the_ddp_driver_end_to_end",  # 2 Gloo ranks (ci/gpu_check.py)
}
MP_FIXTURES = {"ray_session"}  # tests/test_ps.py: a Ray cluster with server and worker actors
LAUNCHERS = {"horovodrun", "torchrun", "mpirun", "mpiexec", "raylet", "gcs_server"}


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "mp: launches a multi-worker job (horovodrun, torchrun, Ray, worker "
        "processes); deselect with -m 'not mp' for the in-process suite",
    )
    config.addinivalue_line("markers", "gpu: needs CUDA; skipped where torch.cuda.is_available() is false")


def pytest_collection_modifyitems(config, items):
    cuda = None
    for item in items:
        module = getattr(getattr(item, "module", None), "__name__", "").rsplit(".", 1)[-1]
        name = item.originalname if hasattr(item, "originalname") else item.name
        if (
            module in MP_MODULES
            or f"{module}::{name}" in MP_TESTS
            or MP_FIXTURES & set(getattr(item, "fixturenames", ()))
        ):
            item.add_marker(pytest.mark.mp)
        if item.get_closest_marker("gpu"):
            if cuda is None:
                import torch

                cuda = torch.cuda.is_available()
            if not cuda:
                item.add_marker(pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is false)"))


@pytest.fixture(autouse=True)
def _unmarked_tests_start_no_launcher(request, monkeypatch):
    """A test that starts horovodrun/torchrun/mpirun/Ray without the `mp` mark fails with a pointer
    here, so `pytest -m "not mp"` stays the in-process suite."""
    if request.node.get_closest_marker("mp"):
        yield
        return
    import subprocess

    real_init = subprocess.Popen.__init__

    def checked_init(self, args, *rest, **kwargs):
        argv = [args] if isinstance(args, (str, bytes, os.PathLike)) else list(args)
        words = {Path(os.fsdecode(w)).name for a in argv for w in os.fsdecode(a).split()}
        if words & LAUNCHERS:
            pytest.fail(
                f"{request.node.nodeid} launches {sorted(words & LAUNCHERS)} but is not marked `mp`: "
                "add it to MP_MODULES/MP_TESTS in tests/conftest.py",
                pytrace=False,
            )
        real_init(self, args, *rest, **kwargs)

    monkeypatch.setattr(subprocess.Popen, "__init__", checked_init)
    yield
