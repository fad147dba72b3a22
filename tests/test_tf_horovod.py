"""Spec: TensorFlow/Keras training under ``horovodrun -np 2 --gloo``, tf-keras and Keras 3.

The runs are ``hvd_compress.tensorflow.demo``'s (``tests/mp/tf_train.py`` adds the checks). One
launch per Keras mode trains the digits MLP (64-256-256-10, SGD 0.05 momentum 0.9, batch 32
per worker) once per (frontend, codec), each rank starting from different weights that
``QuantizedBroadcastCallback`` (8 bits) makes identical:

* tf-keras (``TF_USE_LEGACY_KERAS=1``): Horovod's stock ``horovod.tensorflow.keras.DistributedOptimizer
  (compression=codec)`` with every codec, ``hvd_compress.tensorflow.frontends.keras.DistributedOptimizer``, a
  ``tf.function`` GradientTape loop with the stock ``hvd.DistributedGradientTape(compression=codec)``
  and one with ``GradientReducer``; plus bad-input and checkpoint checks;
* Keras 3: ``hvd_compress.tensorflow.frontends.keras.DistributedOptimizer`` with every codec (Horovod's own
  Keras optimizer does not run on Keras 3) and a GradientTape loop with ``GradientReducer``;
  bad-input and checkpoint checks again.

Each run must reach the fp32 baseline's test accuracy within 1 point (TernGrad and SignSGD within
3), end with bit-identical replicas, and put the codec's nominal bits per value on the wire
(within 10%).
"""

from __future__ import annotations

import math

import pytest

from codec_cases import accuracy_points
from tests.launch import horovodrun

pytest.importorskip("tensorflow")
pytest.importorskip("horovod.tensorflow")

from hvd_compress.tensorflow.demo import CODECS  # noqa: E402  (every codec; imports no TF)

TFKERAS_RUNS = (
    ["hvd:fp32", "hvd:hvd-fp16"]
    + [f"hvd:{c}" for c in CODECS]
    + [
        "ours:qsgd:bits=4",
        "ours:onebit",
        "ours:doublesqueeze:codec=onebit",
        "tape:qsgd:bits=4",
        "tape:onebit",
        "tape:topk:ratio=0.01",
        "reducer:efsign",
    ]
)
KERAS3_RUNS = ["ours:none"] + [f"ours:{c}" for c in CODECS] + ["reducer:onebit", "reducer:qsgd:bits=4"]
BASELINE = {"tfkeras": ("hvd", "fp32"), "keras3": ("ours", "none")}
EPOCHS = "10"


@pytest.fixture(scope="module")
def results():
    """Both launches, run once for the whole module; {mode: {rank: result}}."""
    return {
        "tfkeras": horovodrun(
            2,
            "tests/mp/tf_train.py",
            "--mode",
            "tfkeras",
            "--epochs",
            EPOCHS,
            "--runs",
            ";".join(TFKERAS_RUNS),
            "--checks",
            timeout=900,
        ),
        "keras3": horovodrun(
            2,
            "tests/mp/tf_train.py",
            "--mode",
            "keras3",
            "--epochs",
            EPOCHS,
            "--runs",
            ";".join(KERAS3_RUNS),
            "--checks",
            timeout=900,
        ),
    }


def _row(results, mode, run, rank=0):
    frontend, _, codec = run.partition(":")
    rows = [r for r in results[mode][rank]["rows"] if r["frontend"] == frontend and r["codec"] == codec]
    assert len(rows) == 1, f"{mode} {run}: no result"
    return rows[0]


ALL = [("tfkeras", r) for r in TFKERAS_RUNS] + [("keras3", r) for r in KERAS3_RUNS]


def test_modes_are_what_they_claim(results):
    assert results["tfkeras"][0]["keras_version"].startswith("2.")
    assert results["keras3"][0]["keras_version"].startswith("3.")


@pytest.mark.parametrize("mode,run", ALL)
def test_accuracy_matches_fp32(results, mode, run):
    row = _row(results, mode, run)
    base = _row(results, mode, ":".join(BASELINE[mode]))
    tolerance = accuracy_points(row["codec"]) / 100  # the bar: 1 point, 3 for biased codecs
    assert base["accuracy"] > 0.95, f"fp32 baseline did not train: {base['accuracy']}"
    assert (
        row["accuracy"] >= base["accuracy"] - tolerance
    ), f"{mode} {run}: {row['accuracy']:.4f} vs fp32 {base['accuracy']:.4f}"


@pytest.mark.parametrize("mode,run", ALL)
def test_replicas_bit_identical(results, mode, run):
    for rank in (0, 1):
        assert _row(results, mode, run, rank)["replicas_identical"]


@pytest.mark.parametrize("mode,run", [(m, r) for m, r in ALL if r.split(":", 1)[1] not in ("fp32", "hvd-fp16", "none")])
def test_wire_bits_match_nominal(results, mode, run):
    """Payload bits per compressed value and bits sent per value within 10% of the codec's nominal
    bits (2 workers: ring allreduce, allgather and reduce-scatter all send one payload's worth)."""
    row = _row(results, mode, run)
    codec_row, nominal = row["codec_row"], row["nominal_bits"]
    assert codec_row is not None and codec_row["values"] > 0, f"{run}: no compressed traffic counted"
    assert codec_row["bits_per_value"] == pytest.approx(nominal, rel=0.10)
    assert codec_row["sent_bits_per_value"] == pytest.approx(nominal, rel=0.10)
    # every compressed value of every step went through the codec: 3 kernels, 16384 + 65536 + 2560
    assert codec_row["values"] == row["steps"] * (64 * 256 + 256 * 256 + 256 * 10)


@pytest.mark.parametrize(
    "mode,run", [("tfkeras", "hvd:onebit"), ("keras3", "ours:onebit"), ("keras3", "ours:qsgd:bits=4")]
)
def test_bytes_per_step_against_fp32(results, mode, run):
    """Whole-model bytes per step (biases go uncompressed in fp32) against the fp32 baseline."""
    row, base = _row(results, mode, run), _row(results, mode, ":".join(BASELINE[mode]))
    compressed = 64 * 256 + 256 * 256 + 256 * 10
    total = compressed + 256 + 256 + 10
    expected = compressed * row["nominal_bits"] / 8 + (total - compressed) * 4
    assert row["bytes_per_step"] == pytest.approx(expected, rel=0.10)
    assert base["bytes_per_step"] == pytest.approx(total * 4, rel=0.01)


@pytest.mark.parametrize("mode,run", [(m, r) for m, r in ALL if r.split(":")[0] in ("ours", "hvd")])
def test_compression_stats_callback_logs(results, mode, run):
    row = _row(results, mode, run)
    logs = row["epoch_logs"]
    assert len(logs["hvdc_sent_bytes"]) == int(EPOCHS)
    if row["nominal_bits"] is None:  # Horovod's own compressors: nothing of ours but the broadcast
        return
    assert all(b > 0 for b in logs["hvdc_sent_bytes"])
    for bits in logs["hvdc_bits_per_value"]:
        assert bits == pytest.approx(row["nominal_bits"], rel=0.10)
    if row["codec"] == "none":
        return
    errors = logs["hvdc_compression_error"]
    assert all(math.isfinite(e) and 0 <= e for e in errors)
    if row["codec"] in ("fp16", "bf16"):
        assert max(errors) < 0.01  # a cast's relative error is ~2**-11 / 2**-8


@pytest.mark.parametrize("mode", ["tfkeras", "keras3"])
def test_bad_input_behaves_like_torch(results, mode):
    for rank in (0, 1):
        c = results[mode][rank]["checks"]
        assert c["nan_raise"]["raised"] and "gradient 'bad/kernel' holds NaN or Inf" in c["nan_raise"]["message"]
        assert c["after_nan_raise"] == 1.0 and c["after_nan_propagate"] == 1.0  # job still healthy
        assert c["nan_propagate"] == {"raised": False, "all_nan_bucket": True, "finite_elsewhere": True}
        assert c["zero_exact"] and c["empty_shape"] == [0, 16]
        for dt in ("float16", "bfloat16", "float64"):
            assert c[f"dtype_{dt}"]["dtype"] == dt
            assert c[f"dtype_{dt}"]["mean"] == pytest.approx(1.0, rel=0.01)  # mean of 0.5 and 1.5
        assert (
            c["mismatch"]["raised"]
            and "rank 0: qsgd(bits=4" in c["mismatch"]["message"]
            and "rank 1: qsgd(bits=8" in c["mismatch"]["message"]
        )


@pytest.mark.parametrize("mode,prefix", [("tfkeras", ""), ("keras3", "mlp/")])
def test_residuals_named_after_variables_and_checkpointed(results, mode, prefix):
    """tf-keras names variables ``d1/kernel:0``, Keras 3 by path ``mlp/d1/kernel``."""
    c = results[mode][0]["checks"]["checkpoint"]
    assert c["residual_keys"] == [prefix + k for k in ("d1/kernel", "d2/kernel", "out/kernel")]
    assert c["residual_variable_names"] == [f"hvd_compress/residual/{k}:0" for k in c["residual_keys"]]
    assert len(c["checkpoint_residual_entries"]) == 3 and c["nonzero"] and c["restored_equal"]


@pytest.mark.parametrize("mode", ["tfkeras", "keras3"])
def test_quantized_broadcast(results, mode):
    """Ranks start from different weights; after broadcast_variables(bits=8) (what
    QuantizedBroadcastCallback runs) all hold the same values, the root included (its values
    changed too: it keeps the decoded copy), each within one quantization level (max-abs of its
    512-value bucket / 127) of the root's originals; integers exact; 8-bit payload + scales on the wire."""
    for rank in (0, 1):
        b = results[mode][rank]["checks"]["broadcast"]
        assert b["identical"] and b["changed_here"] and b["within_bound"]
        assert b["counter"] == 7  # the root's integer, exactly
        if rank == 0:
            assert b["payload_bits_per_value"] == pytest.approx(8.0625, rel=0.02)  # 8 bits + fp32 per 512
