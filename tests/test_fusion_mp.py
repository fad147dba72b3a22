"""Spec: under real horovodrun (Gloo, 2 ranks), fused buckets change how many collectives a step
takes, not what it computes. For each codec, through hc.DistributedOptimizer and the stock
hvd.DistributedOptimizer(compression=...), a 100-tensor model trained fused and unfused from the
same start ends with bit-identical parameters on every rank; unfused takes one collective per
compressed tensor and round, fused one per bucket and round; the wire bytes are the same."""

import pytest

from launch import horovodrun

SPECS = ["qsgd:bits=4", "onebit", "powersgd:rank=2,start_iter=0"]


@pytest.fixture(scope="module")
def runs():
    return horovodrun(2, "tests/mp/fusion_train.py", "--specs", ";".join(SPECS), timeout=600)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("frontend", ["hc", "stock"])
def test_fused_and_unfused_training_end_bit_identical(runs, spec, frontend):
    digests = {r[f"{spec}|{frontend}|{b}"]["digest"] for r in runs.values() for b in (0, 64 << 20)}
    assert len(digests) == 1, (spec, frontend)  # both ranks, fused and unfused


@pytest.mark.timeout(900)
@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("frontend", ["hc", "stock"])
def test_fused_takes_one_collective_per_bucket_and_round(runs, spec, frontend):
    for rank, r in runs.items():
        unfused, fused = r[f"{spec}|{frontend}|0"], r[f"{spec}|{frontend}|{64 << 20}"]
        last_u, last_f = unfused["per_step"][-1], fused["per_step"][-1]
        assert last_u["collectives"] == last_u["requested"] == last_f["requested"], (rank, last_u, last_f)
        assert last_u["collectives"] >= 50, last_u  # one per compressed weight and round
        assert last_f["collectives"] <= 4, last_f  # one bucket: one per round (and per kind)
        assert unfused["payload_bytes"] == fused["payload_bytes"] and unfused["values"] == fused["values"]
