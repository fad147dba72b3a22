"""GradiVeQ and PowerSGD in TensorFlow under real horovodrun jobs (Gloo, tf-keras): a small Keras
CNN on the digits (tests/mp/tf_linear_cnn.py) within 1 accuracy point of fp32, replicas
identical, K/d per conv layer printed.

* ``-np 2``: Horovod's stock ``hvd.DistributedGradientTape(tape, compression=codec)`` in a
  ``tf.function`` training loop (the codec runs inside the function Horovod builds);
* ``-np 3``: ``hvd_compress.tensorflow.frontends.keras.DistributedOptimizer`` with ``model.fit`` (our
  ``GradientReducer`` inside Keras' traced train step).

Both train 420 steps (20 and 30 epochs of the sharded digits; SGD 0.03, momentum 0.9, cosine decay
to zero, batch 32 per worker): 20 fp32 warm-up steps and 5.7 GradiVeQ cycles of 10 sampling + 60
compressed steps; 410 PowerSGD steps. Each codec is compared with the fp32 run of the same
training loop (Horovod's ``Compression.none``).
"""

import json

import pytest

from tests.launch import horovodrun

pytest.importorskip("tensorflow")
pytest.importorskip("horovod.tensorflow")

GRADIVEQ = "gradiveq:warmup_steps=20,sample_steps=10,compress_steps=60"
POWERSGD = "powersgd:rank=2,start_iter=10"
LAUNCHES = {2: ("tape", "20"), 3: ("ours", "30")}  # workers: (frontend, epochs): 420 steps each
STEPS = 420
CONV = {"c2/kernel": 3 * 3 * 16 * 32, "c3/kernel": 3 * 3 * 32 * 32}  # GradiVeQ's two conv kernels
FC = {"fc/kernel": 128 * 64}  # the fallback's (QSGD-4) Dense kernel
MATRICES = {"c2/kernel": (32, 144), "c3/kernel": (32, 288), "fc/kernel": (64, 128)}  # PowerSGD's n x m


@pytest.fixture(scope="module", params=sorted(LAUNCHES))
def launch(request, tmp_path_factory):
    np_ = request.param
    frontend, epochs = LAUNCHES[np_]
    baseline = "hvd:fp32" if frontend == "ours" else f"{frontend}:fp32"
    runs = [baseline, f"{frontend}:{GRADIVEQ}", f"{frontend}:{POWERSGD}"]
    out = tmp_path_factory.mktemp(f"tf_linear_np{np_}")
    results = horovodrun(
        np_,
        "tests/mp/tf_linear_cnn.py",
        "--mode",
        "tfkeras",
        "--epochs",
        epochs,
        "--lr",
        "0.03",
        "--runs",
        ";".join(runs),
        timeout=600,
        out_dir=str(out),
    )
    return np_, frontend, results


def _rows(results, rank=0):
    return {r["codec"]: r for r in results[rank]["rows"]}


def test_accuracy_within_a_point_of_fp32_and_replicas_identical(launch):
    np_, frontend, results = launch
    rows = _rows(results)
    fp32 = rows["fp32"]["accuracy"]
    assert fp32 > 0.95, f"fp32 baseline did not train: {fp32}"
    summary = []
    for spec in (GRADIVEQ, POWERSGD):
        row = rows[spec]
        assert row["frontend"] == frontend and row["steps"] == STEPS
        for r in range(np_):
            assert _rows(results, r)[spec]["replicas_identical"], (spec, r)
            assert _rows(results, r)[spec]["accuracy"] == row["accuracy"]  # every rank holds the same model
        assert row["accuracy"] >= fp32 - 0.01, (spec, row["accuracy"], fp32)  # the bar: 1 point
        summary.append(
            {
                "np": np_,
                "frontend": frontend,
                "codec": spec,
                "accuracy": row["accuracy"],
                "fp32": fp32,
                "compression": row["compression"],
            }
        )
    for s in summary:
        comp = s["compression"]
        ratios = (
            (
                ", ".join(f"{k} K/d {v['K']}/{v['d']} = {v['ratio']:.2f}" for k, v in comp.items() if k != "_total")
                + f", total {comp['_total']['ratio']:.2f}"
            )
            if "_total" in comp
            else ", ".join(f"{k} n*m/((n+m)r) {v['ratio']:.2f}" for k, v in comp.items())
        )
        print(
            f"\nnp={s['np']} [{s['frontend']}] {s['codec']}: accuracy {100 * s['accuracy']:.2f}% "
            f"(fp32 {100 * s['fp32']:.2f}%); {ratios}"
        )
    print(json.dumps(summary))


def test_gradiveq_compressed_both_conv_kernels_and_left_the_rest_to_others(launch):
    np_, frontend, results = launch
    row = _rows(results)[GRADIVEQ]
    report = row["compression"]
    assert set(report) == set(CONV) | {"_total"}  # c1 (144 values) goes fp32, fc to the fallback
    for key in CONV:
        assert report[key]["K"] in (96, 128) and 1 <= report[key]["d"] <= report[key]["K"]
    assert report["_total"]["ratio"] > 1.0
    # step 419 of a tensor: (419 - 20) mod 70 = 49 >= 10 sampling steps: compressed phase
    assert row["phases"] == {key: "compress" for key in CONV}
    assert {"basis", "mean", "d", "K", "slices", "phase", "sample_count", "sample_sum", "sample_outer"} <= set(
        row["state"]
    )
    stats = row["wire_stats"]
    label = next(k for k in stats if k.startswith("gradiveq("))
    assert stats[label]["values"] == STEPS * sum(CONV.values())
    assert stats[label]["bits_per_value"] < 32  # compressed phases carry S x d values, not S x K
    assert stats["qsgd(bits=4,bucket_size=512,norm=max)"]["values"] == STEPS * sum(FC.values())


def test_powersgd_bytes_are_what_its_factors_cost(launch):
    np_, frontend, results = launch
    row = _rows(results)[POWERSGD]
    assert set(row["compression"]) == set(MATRICES)
    label = next(k for k in row["wire_stats"] if k.startswith("powersgd("))
    want = sum(10 * 4 * n * m + (STEPS - 10) * 4 * (n + m) * 2 for n, m in MATRICES.values())  # 10 fp32 steps
    assert row["wire_stats"][label]["payload_bytes"] == pytest.approx(want, rel=1e-9)
    assert {"step", "q", "residual"} <= set(row["state"])
