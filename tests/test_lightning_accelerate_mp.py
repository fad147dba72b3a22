"""Spec: hvd_compress's DDP hook through PyTorch Lightning (hvd_compress.torch.frontends.lightning.DDPStrategy,
i.e. Lightning's DDPStrategy(ddp_comm_state=, ddp_comm_hook=)) and through Hugging Face Accelerate
(accelerator.prepare, then register_comm_hook), 2 processes on CPU/Gloo: accuracy within 1 point
of the same run uncompressed, replicas identical, and the codec carried every compressed value at
its nominal bits (within 10%)."""

import pytest

import hvd_compress.torch as hc
from launch import torchrun

CODEC = "qsgd:bits=4"


@pytest.mark.parametrize("framework", ["lightning", "accelerate"])
def test_ddp_hook_through_the_framework_matches_uncompressed(framework):
    pytest.importorskip(framework)
    results = torchrun(2, "tests/mp/lightning_accelerate.py", "--framework", framework, "--codec", CODEC, timeout=400)
    rows = {rank: {row["run"]: row for row in res["rows"]} for rank, res in results.items()}
    plain, ours = rows[0]["ddp"], rows[0][CODEC]
    assert ours["accuracy"] >= plain["accuracy"] - 0.01, (plain["accuracy"], ours["accuracy"])
    assert plain["accuracy"] > 0.9
    for run in ("ddp", CODEC):
        assert rows[0][run]["digest"] == rows[1][run]["digest"], run  # replicas identical
    assert plain["wire_stats"] == {}  # the baseline ran DDP's own allreduce, no hook
    (label,) = [k for k in ours["wire_stats"] if k != "uncompressed"]
    stats = ours["wire_stats"][label]
    nominal = hc.from_spec(CODEC).nominal_bits(1 << 20)
    assert stats["values"] > 0 and stats["bits_per_value"] == pytest.approx(nominal, rel=0.10), stats
