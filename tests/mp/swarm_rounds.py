"""Worker: single SwarmSGD gossip rounds on hand-made models whose pair averages are known exactly.

Every rank's model is ``x0 + (rank + 1) * delta * v`` (``v`` a fixed random vector), so each rank
can compute its partner's model and the exact pair average. Writes what it observed; the test
(tests/test_swarm.py) states the expectations.
"""

import torch

from common import parse_args, write_result

import horovod.torch as hvd

import hvd_compress.torch as hc


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.near = torch.nn.Linear(64, 32)  # weight 2048 values: lattice-coded
        self.far = torch.nn.Linear(32, 64)  # weight 2048 values: lattice-coded, made too far apart
        self.bn = torch.nn.BatchNorm1d(64)  # running stats: buffers; num_batches_tracked: int

    def forward(self, x):
        return self.bn(self.far(torch.relu(self.near(x))))


def set_models(model, rank, delta_near, delta_far):
    """Rank-specific parameters and buffers, identical formulas on every rank."""
    g = torch.Generator().manual_seed(123)
    out = {}
    with torch.no_grad():
        for name, t in list(model.named_parameters()) + list(model.named_buffers()):
            if not t.dtype.is_floating_point:
                continue
            v = torch.rand(t.shape, generator=g) * 2 - 1
            delta = delta_far if name.startswith("far.") else delta_near
            out[name] = lambda r, t0=t.detach().clone(), v=v, d=delta: t0 + (r + 1) * d * v
            t.copy_(out[name](rank))
    return out


def pair_average(fn, rank, partner):
    if partner is None:
        return fn(rank)
    return (fn(rank) + fn(partner)) / 2


def main():
    args = parse_args()
    hvd.init()
    torch.set_num_threads(1)
    rank, size = hvd.rank(), hvd.size()
    res = {"rank": rank, "size": size}

    # 1. the matching: every rank computes the same pairs, partners are mutual
    matchings = [hc.random_matching(size, r, seed=7) for r in range(20)]
    res["matchings"] = matchings

    # 2. one blocking lattice round with a fixed step: 'near' decodes, 'far' falls back
    eps = 1e-4
    model = Net()
    opt = hc.SwarmSGD(
        torch.optim.SGD(model.parameters(), lr=0.0),
        model,
        local_steps=1,
        codec=hc.Lattice(bits=8, eps=eps),
        seed=7,
        buffers="average",
    )
    fns = set_models(model, rank, delta_near=eps, delta_far=1.0)  # near: within 4 eps; far: ~1
    partner = hc.random_matching(size, 0, seed=7)[rank]
    hc.reset_wire_stats()
    opt.gossip()
    got = dict(model.named_parameters(), **dict(model.named_buffers()))
    errs = {}
    for name, fn in fns.items():
        exact = pair_average(fn, rank, partner)
        errs[name] = {
            "max_abs_err": float((got[name] - exact).abs().max()),
            "bit_exact": bool(torch.equal(got[name], exact)),
        }
    res["lattice_round"] = {
        "partner": partner,
        "errors": errs,
        "stats": opt.summary(),
        "wire": hc.wire_stats(),
        "eps": eps,
        "num_batches_tracked": int(model.bn.num_batches_tracked),
    }

    # 3. average_models: every replica identical, equal to the exact mean (floats), ints untouched
    model.bn.num_batches_tracked.fill_(5)
    opt.average_models()
    flat = torch.cat([t.detach().reshape(-1).float() for _, t in sorted(got.items())])
    gathered = hvd.allgather(flat.unsqueeze(0), name="t.swarm.avg")
    res["average"] = {
        "identical": bool(all(torch.equal(gathered[0], gathered[i]) for i in range(size))),
        "num_batches_tracked": int(model.bn.num_batches_tracked),
    }

    # 4. buffers="local": running statistics untouched by gossip
    model = Net()
    opt = hc.SwarmSGD(
        torch.optim.SGD(model.parameters(), lr=0.0), model, codec="lattice:bits=8", seed=7, buffers="local"
    )
    fns = set_models(model, rank, delta_near=1e-3, delta_far=1e-3)
    opt.gossip()
    res["local_buffers_untouched"] = bool(torch.equal(model.bn.running_mean, fns["bn.running_mean"](rank)))
    partner = hc.random_matching(size, 0, seed=7)[rank]
    exact = pair_average(fns["near.weight"], rank, partner)
    res["adaptive_round"] = {
        "partner": partner,
        "stats": opt.summary(),
        "near_err": float((model.near.weight - exact).abs().max()),
        "distance": float((fns["near.weight"](rank) - fns["near.weight"](partner)).abs().max())
        if partner is not None
        else 0.0,
    }

    # 5. a generic codec (QSGD 8-bit on the difference from the anchor) and non-blocking mode
    model = Net()
    opt = hc.SwarmSGD(torch.optim.SGD(model.parameters(), lr=0.0), model, codec="qsgd:bits=8", seed=7, nonblocking=True)
    fns = set_models(model, rank, delta_near=1e-2, delta_far=1e-2)
    opt.gossip()  # round 0 in flight, snapshot = fns(rank)
    with torch.no_grad():  # "local progress" while the exchange is in flight
        model.near.bias.add_(1.0)
    opt.flush()
    partner = hc.random_matching(size, 0, seed=7)[rank]
    exact_w = pair_average(fns["near.weight"], rank, partner)
    exact_b = pair_average(fns["near.bias"], rank, partner) + 1.0
    res["nonblocking_qsgd"] = {
        "partner": partner,
        "weight_err": float((model.near.weight - exact_w).abs().max()),
        "bias_err": float((model.near.bias - exact_b).abs().max()),
    }

    # 6. a non-finite model on one rank: every rank raises the same clear error, nobody hangs
    model = Net()
    opt = hc.SwarmSGD(torch.optim.SGD(model.parameters(), lr=0.0), model, seed=7)
    if rank == size - 1:
        with torch.no_grad():
            model.near.weight[0, 0] = float("nan")
    try:
        opt.gossip()
        res["nonfinite"] = None
    except FloatingPointError as exc:
        res["nonfinite"] = str(exc)

    # 7. settings that differ across ranks: a clear error on every rank at construction
    model = Net()
    try:
        hc.SwarmSGD(torch.optim.SGD(model.parameters(), lr=0.0), model, local_steps=2 if rank == 0 else 3)
        res["mismatch"] = None
    except ValueError as exc:
        res["mismatch"] = str(exc)

    write_result(args.out, rank, res)
    hvd.shutdown()


if __name__ == "__main__":
    main()
