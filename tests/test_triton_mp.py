"""Spec: ``HVD_COMPRESS_BACKEND=triton`` trains under real ``horovodrun -np 2 --gloo`` on CPU tensors
(the Triton kernels under ``TRITON_INTERPRET=1``) as the native C kernels do.

A tiny model (MLP 64-32-32-10, 3 epochs: the interpreter is slow), the two compressed weight
matrices carried by the codec. OneBit and EFSign are deterministic and byte-identical across
backends, so they must reach exactly the native accuracy; QSGD draws its uniforms from a different
(in-kernel) stream, so it must be within 2 points. Replicas bit-identical on every backend.
"""

import pytest

from launch import horovodrun

CODECS = "fp32,onebit,efsign,qsgd:bits=4"
ARGS = ("tests/mp/train_codecs.py", "--codecs", CODECS, "--hidden", "32", "--epochs", "3")


def _rows(results):
    for rank, res in results.items():
        assert [r["accuracy"] for r in res["rows"]] == [r["accuracy"] for r in results[0]["rows"]], rank
    return {r["codec"]: r for r in results[0]["rows"]}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_triton_backend_trains_like_native_under_horovodrun(monkeypatch):
    monkeypatch.setenv("HVD_COMPRESS_BACKEND", "native")
    native = _rows(horovodrun(2, *ARGS, timeout=600))
    monkeypatch.setenv("HVD_COMPRESS_BACKEND", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    triton = _rows(horovodrun(2, *ARGS, timeout=900))
    assert native["fp32"]["accuracy"] > 0.8, native["fp32"]
    for name in ("onebit", "efsign", "qsgd:bits=4"):
        assert triton[name]["replicas_identical"] and native[name]["replicas_identical"], name
        slack = 0.0 if name in ("onebit", "efsign") else 0.02
        assert (
            abs(triton[name]["accuracy"] - native[name]["accuracy"]) <= slack + 1e-9
        ), f"{name}: triton {triton[name]['accuracy']:.4f} vs native {native[name]['accuracy']:.4f}"
        st_t = triton[name]["wire_stats"][triton[name]["describe"]]
        st_n = native[name]["wire_stats"][native[name]["describe"]]
        assert st_t["bits_per_value"] == st_n["bits_per_value"], name
