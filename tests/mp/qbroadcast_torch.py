"""Worker script: the parameter-quantizing broadcast under horovodrun (see tests/test_qbroadcast.py).

Every rank builds a model from its own seed (so replicas start different), runs BatchNorm in
train mode a rank-dependent number of times (so num_batches_tracked differs), then calls
hvd_compress.torch.broadcast_parameters in several modes and records what the test checks.
"""

import hashlib

from common import parse_args, write_result

import torch

import horovod.torch as hvd
import hvd_compress.torch as hc
from hvd_compress.torch.codecs.base import bucket_view


def make_model(seed):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(64, 256),
        torch.nn.BatchNorm1d(256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 256),
        torch.nn.ReLU(),
        torch.nn.Linear(256, 10),
    )


def digest(sd):
    h = hashlib.sha256()
    for k in sorted(sd):
        h.update(k.encode())
        h.update(sd[k].detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def bound_excess(before, after, bits, bucket_size, reference=None):
    """max over values of |after - before| / (the grid step of its bucket) - 1: <= 0 within bound.

    The grid step is max|v|/s of the bucket of the quantized vector v (``v = before - reference``
    for delta mode)."""
    s = 2 ** (bits - 1) - 1
    worst = -1.0
    for k in before:
        if not before[k].dtype.is_floating_point:
            continue
        b = before[k].reshape(-1).double()
        v = b - (reference[k].reshape(-1).double() if reference is not None else 0)
        buckets, _ = bucket_view(v, bucket_size)
        step = (buckets.abs().amax(dim=1) / s).repeat_interleave(bucket_size)[: v.numel()]
        err = (after[k].reshape(-1).double() - b).abs()
        # fp32 arithmetic of the codec: allow 1e-5 relative slack on the step, plus fp32 eps of |b|
        excess = (err - step * (1 + 1e-5) - 1e-6 * b.abs()).max().item()
        worst = max(worst, excess)
    return worst


def main():
    args = parse_args()
    hvd.init()
    rank, size = hvd.rank(), hvd.size()
    out = {"rank": rank, "size": size}

    # --- 1. full broadcast of a state_dict (floats quantized, num_batches_tracked exact)
    model = make_model(seed=100 + rank)
    for _ in range(rank + 2):
        model(torch.randn(32, 64))
    root_before = {k: v.clone() for k, v in model.state_dict().items()}
    root_before = {k: hvd.broadcast(v, 0, name=f"ref.{k}") for k, v in root_before.items()}  # exact reference
    stats = hc.broadcast_parameters(model.state_dict(), root_rank=0, bits=8)
    sd = model.state_dict()
    out["full"] = {
        "digest": digest(sd),
        "stats": stats,
        "excess": bound_excess(root_before, sd, 8, 512),
        "nbt": int(sd["1.num_batches_tracked"]),
        "root_nbt": int(root_before["1.num_batches_tracked"]),
        "max_err": max(
            (sd[k].double() - root_before[k].double()).abs().max().item() for k in sd if sd[k].dtype.is_floating_point
        ),
    }
    hvd_bytes = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    out["horovod_bytes"] = hvd_bytes

    # --- 2. 4 bits, named_parameters input, root rank 1
    root = size - 1
    m2 = make_model(seed=200 + rank)
    ref = {k: hvd.broadcast(p.detach().clone(), root, name=f"ref2.{k}") for k, p in m2.named_parameters()}
    s4 = hc.broadcast_parameters(m2.named_parameters(), root_rank=root, bits=4, bucket_size=128)
    after = {k: p.detach() for k, p in m2.named_parameters()}
    out["bits4"] = {"digest": digest(after), "stats": s4, "excess": bound_excess(ref, after, 4, 128)}

    # --- 3. delta re-synchronization
    m3 = make_model(seed=300)  # same start everywhere is not required, but delta needs a full sync first
    sync = hc.BroadcastState()
    hc.broadcast_parameters(m3.state_dict(), bits=8, state=sync)
    torch.manual_seed(1000 + rank)
    with torch.no_grad():  # every rank drifts differently (local steps)
        for p in m3.parameters():
            p.add_(torch.randn_like(p) * 1e-3)
    last = {k: v.clone() for k, v in sync.synced.items()}
    ref3 = {k: hvd.broadcast(v.clone(), 0, name=f"ref3.{k}") for k, v in m3.state_dict().items()}
    sd3 = hc.broadcast_parameters(m3.state_dict(), bits=8, delta=True, state=sync)
    after3 = m3.state_dict()
    out["delta"] = {
        "digest": digest(after3),
        "stats": sd3,
        "excess": bound_excess(ref3, after3, 8, 512, reference=last),
        "max_err": max(
            (after3[k].double() - ref3[k].double()).abs().max().item()
            for k in after3
            if after3[k].dtype.is_floating_point
        ),
        "state_matches": all(torch.equal(sync.synced[k], after3[k]) for k in after3),
    }

    # --- 4. fp16 / fp64 / int / bool tensors in one call
    g = torch.Generator().manual_seed(rank)
    mixed = {
        "h": torch.randn(3000, generator=g).half(),
        "d": torch.randn(700, generator=g).double(),
        "i": torch.randint(-5, 5, (17,), generator=g),
        "b": torch.rand(9, generator=g) > 0.5,
        "s": torch.tensor(3.5 + rank),
    }
    refm = {
        k: hvd.broadcast(v.to(torch.uint8) if v.dtype == torch.bool else v.clone(), 0, name=f"refm.{k}")
        for k, v in mixed.items()
    }
    refm["b"] = refm["b"].bool()
    hc.broadcast_parameters(mixed, bits=8)
    out["mixed"] = {
        "digest": digest(mixed),
        "int_exact": torch.equal(mixed["i"], refm["i"]),
        "bool_exact": torch.equal(mixed["b"], refm["b"]),
        "dtypes": {k: str(v.dtype) for k, v in mixed.items()},
        "scalar": float(mixed["s"]),
        "root_scalar": float(refm["s"]),
        "half_err": (mixed["h"].float() - refm["h"].float()).abs().max().item(),
    }

    # --- 5. unbiasedness: the mean over repeated broadcasts (fresh draws) approaches the root's values
    x = hvd.broadcast(torch.randn(2000, generator=torch.Generator().manual_seed(7)), 0, name="ub")
    acc = torch.zeros_like(x, dtype=torch.float64)
    reps = 64
    for i in range(reps):
        y = {"x": x.clone()}
        hc.broadcast_parameters(y, bits=2, bucket_size=2000, seed=i)
        acc += y["x"].double()
    step = x.abs().max().item()  # 2 bits: s = 1, the grid step is max|x|
    out["unbiased"] = {
        "mean_abs_bias": (acc / reps - x.double()).abs().mean().item(),
        "single_abs_err": (y["x"].double() - x.double()).abs().mean().item(),
        "step": step,
    }

    # --- 6. bad input gives the same clear error on every rank, never a hang
    errors = {}
    bad = {"w": torch.zeros(10 + rank)}  # shapes differ across ranks
    try:
        hc.broadcast_parameters(bad)
    except ValueError as e:
        errors["shape"] = str(e)
    nan = {"w": torch.full((5,), float("nan")) if rank == 0 else torch.zeros(5), "v": torch.ones(3)}
    try:
        hc.broadcast_parameters(nan)
    except FloatingPointError as e:
        errors["nan"] = str(e)
        errors["nan_untouched"] = bool((nan["v"] == 1).all())
    try:
        hc.broadcast_parameters({"w": torch.zeros(3)}, delta=True)
    except ValueError as e:
        errors["delta_no_state"] = str(e)
    out["errors"] = errors
    out["wire"] = hc.wire_stats()
    write_result(args.out, rank, out)


if __name__ == "__main__":
    main()
