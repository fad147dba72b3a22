"""Worker: bad input through the real Horovod exchange. Each case records what happened on this
rank; the test checks that every rank saw the same clear outcome (and nobody hung).
"""

from common import parse_args, write_result

args = parse_args()

import horovod.torch as hvd  # noqa: E402
import torch  # noqa: E402

import hvd_compress.torch as hc  # noqa: E402
from hvd_compress.torch.collectives import HorovodCollectives  # noqa: E402
from hvd_compress.torch.exchange import Exchange, drive  # noqa: E402

hvd.init()
rank, size = hvd.rank(), hvd.size()
comm = HorovodCollectives()
out = {"rank": rank}
CODECS = [
    "qsgd:bits=4",
    "terngrad",
    "onebit",
    "efsign",
    "signsgd",
    "topk:ratio=0.05",
    "bf16",
    "fp16",
    "none",
    "doublesqueeze:codec=onebit",
]


def average(codec, tensors):
    ex = Exchange(codec, comm)
    ex.ensure_checked()
    return drive({k: ex.average(k, t) for k, t in tensors.items()})


def outcome(fn):
    try:
        return {"ok": True, "value": fn()}
    except Exception as exc:  # the message is what we check
        return {"ok": False, "type": type(exc).__name__, "message": str(exc)}


# 1. NaN on rank 1 only: every rank raises FloatingPointError naming the tensor.
for spec in CODECS:

    def nan_case():
        g = torch.randn(64, 64, generator=torch.Generator().manual_seed(rank))
        if rank == 1:
            g[3, 5] = float("nan")
        ok = torch.randn(64, 64)
        average(hc.from_spec(spec), {"fc1.weight": g, "fc2.weight": ok})
        return "no error"

    out[f"nan/{spec}"] = outcome(nan_case)

# 2. Inf with nonfinite='propagate': every rank gets a non-finite result in that tensor only,
#    and error-feedback residuals stay finite.
for spec in ["onebit", "qsgd:bits=4", "topk:ratio=0.05"]:

    def propagate_case():
        codec = hc.from_spec(spec + ("," if ":" in spec else ":") + "nonfinite=propagate")
        g = torch.randn(64, 64)
        if rank == 0:
            g[0, 0] = float("inf")
        res = average(codec, {"w": g, "v": torch.ones(64, 64)})
        residual = codec.state.get("residual", {}).get("w")
        return {
            "w_finite": bool(torch.isfinite(res["w"]).all()),
            "v_finite": bool(torch.isfinite(res["v"]).all()),
            "residual_finite": None if residual is None else bool(torch.isfinite(residual).all()),
        }

    out[f"propagate/{spec}"] = outcome(propagate_case)

# 3. Zero and empty tensors are exact.
for spec in CODECS:

    def zero_case():
        res = average(
            hc.from_spec(spec),
            {"z": torch.zeros(64, 64), "e": torch.zeros(0, 64), "z16": torch.zeros(64, 64, dtype=torch.float16)},
        )
        return {
            "zero_exact": bool(torch.equal(res["z"], torch.zeros(64, 64))),
            "empty_shape": list(res["e"].shape),
            "z16_exact": bool(torch.equal(res["z16"], torch.zeros(64, 64, dtype=torch.float16))),
            "z16_dtype": str(res["z16"].dtype),
        }

    out[f"zero/{spec}"] = outcome(zero_case)

# 4. fp16, bf16, fp64 and non-contiguous gradients: dtype and shape kept, value close to the
#    exact average (tolerance per codec below, in the test), replicas identical.
for spec in CODECS:

    def dtype_case():
        codec = hc.from_spec(spec)
        base = torch.randn(96, 80, generator=torch.Generator().manual_seed(10 + rank))
        tensors = {
            "f16": base.to(torch.float16),
            "bf16": base.to(torch.bfloat16),
            "f64": base.double(),
            "noncontig": base.t(),
        }
        assert not tensors["noncontig"].is_contiguous()
        res = average(codec, tensors)
        exact = hvd.allreduce(base, name=f"exact.{spec}", op=hvd.Average)
        report = {}
        for k, v in res.items():
            ref = exact.t() if k == "noncontig" else exact
            err = float((v.float() - ref).norm() / ref.norm())
            gathered = hvd.allgather(v.float().reshape(1, -1).contiguous(), name=f"rep.{spec}.{k}")
            report[k] = {
                "dtype": str(v.dtype),
                "shape": list(v.shape),
                "rel_err": err,
                "replicas_identical": bool(torch.equal(gathered[0], gathered[-1])),
            }
        return report

    out[f"dtype/{spec}"] = outcome(dtype_case)

write_result(args.out, rank, out)
hvd.shutdown()
