"""GradiVeQ and PowerSGD under real horovodrun jobs: a small CNN within 1 accuracy point of fp32,
replicas identical, through the stock ``hvd.DistributedOptimizer`` (2 workers) and
``hvd_compress.torch.DistributedOptimizer`` (3 workers, uneven)."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
from launch import horovodrun

GRADIVEQ = "gradiveq:warmup_steps=20,sample_steps=10,compress_steps=60"
GRADIVEQ_R8 = GRADIVEQ + ",ratio=8,error_feedback=true"  # a known compression (issue 17)
POWERSGD = "powersgd:rank=2,start_iter=10"
STEPS = 400  # 20 warm-up + 5.5 GradiVeQ cycles of 70; 390 PowerSGD steps


@pytest.mark.parametrize("np_,frontend", [(2, "stock"), (3, "ours")])
def test_cnn_trains_within_a_point_of_fp32(np_, frontend, tmp_path):
    extra = f";{GRADIVEQ_R8}" if frontend == "stock" else ""
    results = horovodrun(
        np_,
        "tests/mp/linear_cnn.py",
        "--codecs",
        f"fp32;{GRADIVEQ};{POWERSGD}{extra}",
        "--frontends",
        frontend,
        "--steps",
        str(STEPS),
        timeout=600,
        out_dir=str(tmp_path),
    )
    rows = {r["codec"]: r for r in results[0]["rows"]}
    fp32 = rows["fp32"]["accuracy"]
    summary = []
    for spec in (GRADIVEQ, POWERSGD) + ((GRADIVEQ_R8,) if extra else ()):
        row = rows[spec]
        assert row["frontend"] == frontend
        assert row["replicas_identical"], spec
        for r in range(1, np_):  # every rank evaluated the same model
            assert (
                results[r]["rows"][[x["codec"] for x in results[r]["rows"]].index(spec)]["accuracy"] == row["accuracy"]
            )
        assert abs(row["accuracy"] - fp32) <= 0.01, (spec, row["accuracy"], fp32)
        label = next(k for k in row["wire_stats"] if k.startswith(spec.split(":")[0]))
        stats = row["wire_stats"][label]
        summary.append(
            {
                "codec": spec,
                "frontend": frontend,
                "accuracy": row["accuracy"],
                "fp32": fp32,
                "bits_per_value": stats["bits_per_value"],
                "compression": row["compression"],
                "bytes_vs_fp32": row["bytes_vs_fp32"],
                "bytes_vs_fp32_at_150": row["bytes_vs_fp32_early"],
            }
        )
    if extra:  # ratio 8 + error feedback: at most 0.35x fp32's bytes over the first 150 steps
        assert rows[GRADIVEQ_R8]["bytes_vs_fp32_early"] <= 0.35, rows[GRADIVEQ_R8]["bytes_vs_fp32_early"]
        assert rows[GRADIVEQ_R8]["compression"]["_total"]["ratio"] >= 7.5
    gvq = rows[GRADIVEQ]
    report = gvq["compression"]
    assert {"2.weight", "5.weight"} <= set(report)  # both conv kernels went through the PCA
    assert report["_total"]["ratio"] > 1.0
    assert set(gvq["phases"].values()) == {"compress"}  # 400 = 20 + 5 * 70 + 10 sampling + 20
    assert "basis" in gvq["state_keys"] and "mean" in gvq["state_keys"]
    # PowerSGD's bytes are exactly what its factors cost: 10 fp32 steps, then P and Q
    psgd = rows[POWERSGD]
    label = next(k for k in psgd["wire_stats"] if k.startswith("powersgd"))
    want = 0
    for name, info in psgd["compression"].items():
        numel = 1
        for s in info["shape"]:
            numel *= s
        want += 10 * 4 * numel + (STEPS - 10) * 4 * numel / info["ratio"]
    assert psgd["wire_stats"][label]["payload_bytes"] == pytest.approx(want, rel=1e-9)
    assert "q" in psgd["state_keys"] and "residual" in psgd["state_keys"]
    (tmp_path / "summary.json").write_text(json.dumps(summary, indent=1))
    for s in summary:
        ratio = s["compression"].get("_total", {}).get("ratio")
        print(
            f"np={np_} {s['codec']} [{frontend}]: accuracy {100 * s['accuracy']:.2f}% "
            f"(fp32 {100 * s['fp32']:.2f}%), {s['bits_per_value']:.2f} bits/value on the wire"
            + (f", achieved K/d {ratio:.2f}" if ratio else "")
            + f"; bytes vs fp32: {s['bytes_vs_fp32']:.3f} (first 150 steps {s['bytes_vs_fp32_at_150']:.3f})"
        )
