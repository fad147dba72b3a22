"""Spec: `HVD_COMPRESS=spec horovodrun -np 2 python -m hvd_compress.run script.py` runs an unchanged
Horovod script (examples/horovod_pytorch_digits.py imports no hvd_compress) with the codec: every
gradient value is exchanged each step, the compressed ones at the codec's nominal bits (within
10%), each rank logs its wire_stats line at exit, and the model still learns."""
import json
import math
import re

import pytest

import hvd_compress.torch as hc
from launch import PYTHON, horovodrun_output

SCRIPT = "examples/horovod_pytorch_digits.py"
TRAIN_SAMPLES, BATCH, EPOCHS = 1347, 32, 3  # digits: 1797 images, 25% held out
MODEL_VALUES = 16 * 9 + 16 + 32 * 16 * 9 + 32 + 512 * 128 + 128 + 128 * 10 + 10  # the script's Net


def wire_stats_lines(output: str) -> dict:
    found = re.findall(r"\[hvd_compress\.run\] rank (\d+) torch wire_stats (\{.*\})", output)
    return {int(rank): json.loads(stats) for rank, stats in found}


@pytest.mark.timeout(600)
def test_unchanged_horovod_script_runs_compressed_through_the_launcher():
    spec = "qsgd:bits=4"
    out = horovodrun_output(2, [PYTHON, "-m", "hvd_compress.run", SCRIPT, "--epochs", EPOCHS, "--batch-size", BATCH],
                            timeout=420, env={"HVD_COMPRESS": spec})
    stats = wire_stats_lines(out)
    assert sorted(stats) == [0, 1], out[-3000:]
    steps = EPOCHS * math.ceil(math.ceil(TRAIN_SAMPLES / 2) / BATCH)
    codec = hc.from_spec(spec)
    for rank, rows in stats.items():
        (label,) = [k for k in rows if k != "uncompressed"]
        assert label.startswith("qsgd(bits=4")
        total = sum(row["values"] for row in rows.values())
        assert total == steps * MODEL_VALUES, (rank, rows)  # every gradient value, every step
        row = rows[label]
        nominal_bytes_per_step = codec.nominal_bits(1 << 20) * row["values"] / steps / 8
        assert row["payload_bytes"] / steps == pytest.approx(nominal_bytes_per_step, rel=0.10), row
    accuracy = [float(a) for a in re.findall(r"Accuracy: ([\d.]+)%", out)]
    assert len(accuracy) == EPOCHS and accuracy[-1] > 80, out[-3000:]
