"""Spec: under real ``horovodrun --gloo`` (2 ranks: allgather; 3 ranks: reduce-scatter too), the
TensorFlow fused compressed buckets (``bucket_bytes``) change how many collectives a step takes,
not what it computes. For each codec, a GradientReducer loop eagerly and inside ``tf.function``
and the Keras ``DistributedOptimizer``, fused (64 MiB) and unfused (0) from the same start, end
bit-identical (results and codec state) on every rank; the fused step issues fewer collectives
(counted at the backend eagerly and as Horovod ops in the traced graph)."""

import pytest

from launch import horovodrun

pytest.importorskip("tensorflow")
pytest.importorskip("horovod.tensorflow")

SPECS = ["onebit", "qsgd:bits=4", "efsign", "topk:ratio=0.05", "terngrad", "doublesqueeze:codec=onebit"]
FUSED = 64 << 20
WORLDS = (2, 3)


@pytest.fixture(scope="module")
def runs():
    return {np_: horovodrun(np_, "tests/mp/tf_fusion.py", "--specs", ";".join(SPECS), timeout=900) for np_ in WORLDS}


@pytest.mark.mp
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("spec", SPECS)
def test_fused_and_unfused_end_bit_identical(runs, world, spec):
    for frontend in ("eager", "graph", "keras"):
        rows = [r[f"{spec}|{frontend}|{b}"] for r in runs[world].values() for b in (0, FUSED)]
        assert len({row["digest"] for row in rows}) == 1, (frontend, rows)  # every rank, fused or not
        for rank, r in runs[world].items():  # residuals are per rank: fused == unfused on each
            assert r[f"{spec}|{frontend}|0"]["state"] == r[f"{spec}|{frontend}|{FUSED}"]["state"], (frontend, rank)


@pytest.mark.mp
@pytest.mark.timeout(1800)
@pytest.mark.parametrize("world", WORLDS)
@pytest.mark.parametrize("spec", SPECS)
def test_fused_step_issues_fewer_collectives(runs, world, spec):
    for rank, r in runs[world].items():
        unfused, fused = r[f"{spec}|eager|0"]["per_step"][-1], r[f"{spec}|eager|{FUSED}"]["per_step"][-1]
        assert fused < unfused and fused <= 5, (rank, unfused, fused)  # one bucket: one per round
        g_unfused, g_fused = r[f"{spec}|graph|0"]["graph_collectives"], r[f"{spec}|graph|{FUSED}"]["graph_collectives"]
        assert (g_unfused, g_fused) == (unfused, fused), (rank, g_unfused, g_fused, unfused, fused)
