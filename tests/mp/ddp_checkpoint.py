"""Checkpoint and restore of the DDP hook state, plus the hook's edge cases, under 2-process Gloo.

Phases (each rank writes what it saw; tests/test_ddp.py asserts):

* ``reference``: train 2K steps with ``--codec``; at step K save a checkpoint the usual way
  (rank 0: model + optimizer; every rank: its own hook state, it holds per-rank residuals).
* ``resumed``: a fresh model from another seed, DDP, optimizer and hook; load the checkpoint and
  train steps K..2K with ``overlap=False``: parameters must equal the reference bit for bit.
* ``no_hook_state``: the same without loading the hook state: parameters must differ (the state
  matters, so the equality above is not an accident).
* ``wrong_codec``: loading the state into a hook with other codec settings raises ValueError.
* ``unused``: ``find_unused_parameters=True`` with a branch that gets no gradient.
* ``nonfinite``: a NaN gradient on rank 1 only raises an error naming the parameter on both ranks.
"""

import os
import traceback

from common import parse_args, write_result

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

K = 15


def batch(step, rank, data, bs=32):
    xtr, ytr = data[0], data[1]
    g = torch.Generator().manual_seed(1000 + step)
    idx = torch.randperm(xtr.shape[0], generator=g)[rank * bs : (rank + 1) * bs]
    return xtr[idx], ytr[idx]


def build(codec, seed, overlap=True):
    import hvd_compress.torch as hc
    from hvd_compress.demo import make_model

    model = make_model(seed, 64)
    ddp = DDP(model, bucket_cap_mb=0.01)
    state, hook = hc.ddp_comm_hook(codec, named_parameters=model.named_parameters(), overlap=overlap)
    ddp.register_comm_hook(state, hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05, momentum=0.9)
    return model, ddp, state, opt


def run(ddp, opt, data, steps):
    rank = dist.get_rank()
    for step in steps:
        x, y = batch(step, rank, data)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(ddp(x), y).backward()
        opt.step()


def flat(model):
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


def main():
    args = parse_args({"--codec": {"default": "doublesqueeze:codec=qsgd,bits=4"}})
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    from hvd_compress.demo import load_digits_split

    data = load_digits_split(0)
    rank = dist.get_rank()
    out = {}
    os.makedirs(args.out, exist_ok=True)
    ckpt = os.path.join(args.out, "ckpt.pt")
    hook_ckpt = os.path.join(args.out, f"ckpt.comm_hook.rank{rank}.pt")

    # reference run, checkpoint at step K
    model, ddp, state, opt = build(args.codec, seed=0)
    run(ddp, opt, data, range(K))
    if rank == 0:
        torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, ckpt)
    torch.save(state.state_dict(), hook_ckpt)
    dist.barrier()
    out["state_keys"] = {k: sorted(v) for k, v in state.codec.state.items() if isinstance(v, dict)}
    out["inner_state_keys"] = {
        k: sorted(v) for k, v in getattr(state.codec, "inner", state.codec).state.items() if isinstance(v, dict)
    }
    out["iteration_at_save"] = state.iteration
    run(ddp, opt, data, range(K, 2 * K))
    reference = flat(model)

    def resume(load_hook_state, overlap):
        model, ddp, state, opt = build(args.codec, seed=1, overlap=overlap)
        saved = torch.load(ckpt)  # weights_only loading: the hook state holds plain types only
        model.load_state_dict(saved["model"])
        opt.load_state_dict(saved["opt"])
        if load_hook_state:
            state.load_state_dict(torch.load(hook_ckpt))
        iteration = state.iteration
        run(ddp, opt, data, range(K, 2 * K))
        return flat(model), iteration

    resumed, out["iteration_after_load"] = resume(True, overlap=False)
    out["resumed_identical"] = torch.equal(resumed, reference)
    control, _ = resume(False, overlap=True)
    out["no_hook_state_identical"] = torch.equal(control, reference)
    out["no_hook_state_max_diff"] = (control - reference).abs().max().item()

    try:
        _, _, other, _ = build("doublesqueeze:codec=qsgd,bits=8", seed=0)
        other.load_state_dict(torch.load(hook_ckpt))
        out["wrong_codec"] = "no error"
    except ValueError as exc:
        out["wrong_codec"] = str(exc)

    # unused parameters: a branch that never takes part in the loss
    import hvd_compress.torch as hc

    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.body = torch.nn.Linear(64, 64)
            self.used = torch.nn.Linear(64, 10)
            self.unused = torch.nn.Linear(64, 10)

        def forward(self, x):
            return self.used(torch.relu(self.body(x)))

    net = TwoHeads()
    ddp = DDP(net, find_unused_parameters=True)
    st, hook = hc.ddp_comm_hook("onebit:min_numel=256", named_parameters=net.named_parameters())
    ddp.register_comm_hook(st, hook)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.05)
    before = net.unused.weight.detach().clone()
    run(ddp, opt, data, range(5))
    everyone = [torch.empty_like(flat(net)) for _ in range(2)]
    dist.all_gather(everyone, flat(net))
    out["unused"] = {
        "replicas_identical": torch.equal(everyone[0], everyone[1]),
        "unused_unchanged": torch.equal(net.unused.weight.detach(), before),
        "iterations": st.iteration,
    }

    # a NaN gradient on rank 1 only: both ranks must raise, naming the parameter
    model, ddp, state, opt = build("qsgd:bits=4", seed=0)
    x, y = batch(0, rank, data)
    if rank == 1:
        x = x.clone()
        x[0, 0] = float("nan")
    try:
        torch.nn.functional.cross_entropy(ddp(x), y).backward()
        out["nonfinite"] = "no error"
    except Exception as exc:  # DDP may wrap the hook's FloatingPointError
        out["nonfinite"] = f"{type(exc).__name__}: {exc}"[:2000]
        out["nonfinite_trace"] = traceback.format_exc()[-1500:]
    write_result(args.out, rank, out)
    # the DDP that saw the error is left mid-iteration; skip a collective teardown
    os._exit(0)


if __name__ == "__main__":
    main()
