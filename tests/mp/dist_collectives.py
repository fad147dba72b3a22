"""TorchDistCollectives over Gloo: every operation, uneven sizes, odd dtypes, both alltoall modes,
waits out of issue order, and the Exchange's patterns (allgather, reduce-scatter) on top of it.

Run by tests/test_ddp.py under ``torch.distributed.run --nproc_per_node=3``. Each rank writes
``{"checks": {name: true|"message"}, ...}``; the test asserts every check is true on every rank.
"""

import traceback

from common import close_process_group, parse_args, write_result

import torch
import torch.distributed as dist


def main():
    args = parse_args()
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    from hvd_compress.torch.dist import TorchDistCollectives
    from hvd_compress.torch.exchange import Exchange, WireStats, drive
    import hvd_compress.torch as hc

    rank, size = dist.get_rank(), dist.get_world_size()
    checks = {}

    def check(name, fn):
        try:
            ok = fn()
            checks[name] = True if ok is None or ok is True else f"returned {ok!r}"
        except Exception:  # reported per check, the job goes on
            checks[name] = traceback.format_exc()[-1500:]

    native = TorchDistCollectives()
    sendrecv = TorchDistCollectives(alltoall="sendrecv")

    def allreduce_ops():
        x = torch.arange(6, dtype=torch.float32).view(2, 3) + rank
        before = x.clone()
        s = native.allreduce_async(x, "s", op="sum").wait()
        a = native.allreduce_async(x, "a", op="average").wait()
        m = native.allreduce_async(x, "m", op="max").wait()
        base = torch.arange(6, dtype=torch.float32).view(2, 3)
        assert torch.equal(x, before), "allreduce modified its input"
        assert torch.equal(s, size * base + sum(range(size))), s
        assert torch.allclose(a, base + sum(range(size)) / size), a
        assert torch.equal(m, base + size - 1), m
        i = native.allreduce_async(torch.tensor([rank + 1], dtype=torch.int64), "i", op="sum").wait()
        assert i.dtype == torch.int64 and i.item() == size * (size + 1) // 2
        h = native.allreduce_async(torch.full((4,), 0.5, dtype=torch.float16), "h").wait()
        assert h.dtype == torch.float16 and torch.equal(h, torch.full((4,), 0.5, dtype=torch.float16))

    def allgather_variable():
        # rank r contributes r+1 rows (rank 0: 1 row, ...), plus a rank with zero rows
        rows = 0 if rank == 1 else rank + 1
        t = torch.full((rows, 3), float(rank))
        out = native.allgather_async(t, "ag").wait()
        expect = torch.cat([torch.full((0 if r == 1 else r + 1, 3), float(r)) for r in range(size)])
        assert torch.equal(out, expect), out

    def allgather_dtypes():
        for dtype in (torch.uint8, torch.bool, torch.bfloat16, torch.int32, torch.float64):
            t = (torch.arange(rank + 2) % 2).to(dtype)
            out = native.allgather_async(t, "agd").wait()
            expect = torch.cat([(torch.arange(r + 2) % 2).to(dtype) for r in range(size)])
            assert out.dtype == dtype and torch.equal(out, expect), (dtype, out)
        empty = native.allgather_async(torch.empty(0, 5), "empty").wait()
        assert empty.shape == (0, 5)

    def alltoall(comm):
        # rank r sends (r + d) % 3 rows to rank d (zero rows to some), each row tagged (r, d)
        splits = [(rank + d) % 3 for d in range(size)]
        rows = [
            torch.tensor([[rank, d, j] for j in range(splits[d])], dtype=torch.int16).view(-1, 3) for d in range(size)
        ]
        out = comm.alltoall_async(torch.cat(rows), splits, "a2a").wait()
        expect = torch.cat(
            [
                torch.tensor([[r, rank, j] for j in range((r + rank) % 3)], dtype=torch.int16).view(-1, 3)
                for r in range(size)
            ]
        )
        assert torch.equal(out, expect), (out, expect)
        # uint8 bytes, as the exchange sends them
        payload = torch.arange(sum(splits), dtype=torch.uint8) + 50 * rank
        got = comm.alltoall_async(payload, splits, "a2a.u8").wait()
        pieces = []
        for r in range(size):
            theirs = [(r + d) % 3 for d in range(size)]
            start = sum(theirs[:rank])
            pieces.append(torch.arange(start, start + theirs[rank], dtype=torch.uint8) + 50 * r)
        assert torch.equal(got, torch.cat(pieces)), got

    def broadcast():
        t = torch.full((2, 2), float(rank))
        out = native.broadcast_async(t, 2, "b").wait()
        assert torch.equal(out, torch.full((2, 2), 2.0)) and torch.equal(t, torch.full((2, 2), float(rank)))
        b = native.broadcast_async(torch.tensor([rank == 0, True]), 0, "bb").wait()
        assert b.dtype == torch.bool and b.tolist() == [True, True]

    def out_of_order_waits():
        # ranks wait in different orders; the second stages still go out in issue order
        pend = [native.allgather_async(torch.full((k + 1,), float(k)), f"o{k}") for k in range(4)]
        pend.append(native.alltoall_async(torch.arange(size, dtype=torch.float32) + 10 * rank, [1] * size, "o.a2a"))
        order = list(range(len(pend)))
        if rank % 2:
            order.reverse()
        got = {i: pend[i].wait() for i in order}
        for k in range(4):
            assert torch.equal(got[k], torch.full((size * (k + 1),), float(k))), (k, got[k])
        assert torch.equal(got[4], torch.tensor([10.0 * r + rank for r in range(size)])), got[4]

    def repeated_names(comm):
        # the same names again and again with sizes that stay, grow and shrink: the one-round path
        # (sizes cached per name) must give exactly what the two-round path gives
        for it, grow in enumerate((0, 0, 3, 0, 1, 5, 0)):
            rows = rank + 1 + grow * (rank == it % size)
            t = torch.full((rows, 2), float(10 * rank + it))
            got = comm.allgather_async(t, "rep.ag").wait()
            expect = torch.cat(
                [torch.full((r + 1 + grow * (r == it % size), 2), float(10 * r + it)) for r in range(size)]
            )
            assert torch.equal(got, expect), (it, got)
            splits = [(rank + d + it) % 3 + (grow if d == (rank + 1) % size else 0) for d in range(size)]
            rows = [torch.full((splits[d], 2), float(100 * rank + 10 * d + it)) for d in range(size)]
            got = comm.alltoall_async(torch.cat(rows), splits, "rep.a2a").wait()
            theirs = [(r + rank + it) % 3 + (grow if rank == (r + 1) % size else 0) for r in range(size)]
            expect = torch.cat([torch.full((theirs[r], 2), float(100 * r + 10 * rank + it)) for r in range(size)])
            assert torch.equal(got, expect), (it, got, expect)
        first = comm.allgather_async(torch.zeros(1), "twice")
        try:
            comm.allgather_async(torch.zeros(1), "twice")
        except ValueError as exc:
            assert "already in flight" in str(exc), exc
        else:
            raise AssertionError("no error for a name reused while in flight")
        first.wait()

    def bad_input():
        for fn, text in (
            (lambda: native.alltoall_async(torch.zeros(4), [1, 1], "x"), "splits"),
            (lambda: native.allgather_async(torch.tensor(1.0), "x"), "dimension"),
            (lambda: native.allreduce_async(torch.zeros(1), "x", op="min"), "op"),
            (lambda: native.allreduce_async(torch.zeros(1, dtype=torch.int32), "x"), "average"),
        ):
            try:
                fn()
            except (ValueError, TypeError) as exc:
                assert text in str(exc), exc
            else:
                raise AssertionError(f"no error for bad {text}")

    def exchange_patterns():
        # the Exchange's compressed reduce-scatter and allgather over torch.distributed, 3 ranks
        torch.manual_seed(100 + rank)
        grad = torch.randn(64, 50)
        exact = native.allreduce_async(grad, "exact", op="average").wait()
        for spec, tol in (
            ("qsgd:bits=8", 0.05),
            ("doublesqueeze:codec=qsgd,bits=8", 0.05),
            ("qsgd:bits=8,exchange=allgather", 0.05),
            ("bf16", 0.02),
            ("fp16", 0.01),
        ):
            for comm in (native, sendrecv):
                codec = hc.from_spec(spec)
                ex = Exchange(codec, comm, stats=WireStats())
                ex.ensure_checked()
                for _ in range(3):  # later steps take the one-round path
                    out = drive({"w": ex.average("w", grad), "v": ex.average("v", grad[:7])})["w"]
                err = ((out - exact).norm() / exact.norm()).item()
                assert out.shape == grad.shape and err < tol, (spec, err)  # tol: 8-bit / 16-bit rounding
                flat = out.reshape(1, -1)
                everyone = comm.allgather_async(flat, "same").wait()
                assert all(torch.equal(everyone[0], everyone[r]) for r in range(size)), f"{spec}: replicas differ"

    def config_mismatch():
        codec = hc.QSGD(bits=4 if rank == 0 else 8)
        ex = Exchange(codec, native, stats=WireStats())
        try:
            ex.ensure_checked()
        except ValueError as exc:
            assert "different compression settings" in str(exc), exc
        else:
            raise AssertionError("no error for mismatched codecs")

    for name, fn in (
        ("allreduce_ops", allreduce_ops),
        ("allgather_variable", allgather_variable),
        ("allgather_dtypes", allgather_dtypes),
        ("alltoall_native", lambda: alltoall(native)),
        ("alltoall_sendrecv", lambda: alltoall(sendrecv)),
        ("broadcast", broadcast),
        ("out_of_order_waits", out_of_order_waits),
        ("bad_input", bad_input),
        ("repeated_names_native", lambda: repeated_names(native)),
        ("repeated_names_sendrecv", lambda: repeated_names(sendrecv)),
        ("exchange_patterns", exchange_patterns),
        ("config_mismatch", config_mismatch),
    ):
        check(name, fn)
        dist.barrier()
    write_result(args.out, rank, {"checks": checks, "native": repr(native), "sendrecv": repr(sendrecv)})
    close_process_group()


if __name__ == "__main__":
    main()
