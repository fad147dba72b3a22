"""The Python half of ci/gpu_check.sh: steps that need more than a command line.

Runs with nothing but torch (and numpy, hvd_compress's one dependency) in a plain ``python3``,
from the repository root with ``PYTHONPATH=.``: no pytest, Horovod, TF or network needed.

    python ci/gpu_check.py env   --out DIR                 # versions and devices -> DIR/env.json
    python ci/gpu_check.py tests --marker gpu --json PATH  # the gpu tests without pytest (see below)
    python ci/gpu_check.py ddp   --device cuda --out DIR   # 2-rank DDP hook run (see below)

``tests``: where pytest is missing, the tests are still run: a minimal stand-in for the parts of
pytest the test modules use (marks, parametrize, skip/skipif, raises, warns) is put in
``sys.modules["pytest"]``, every test function of the modules that carry the marker is called
with each parameter set, and a pytest-like summary line is printed ("N passed, N failed, N
skipped"). Tests needing fixtures are reported as skipped. Exit 0 when nothing failed.

``ddp``: trains a small MLP on a synthetic, seeded classification task (Gaussian clusters, two
per class; no data set to download) under DistributedDataParallel with the hvd_compress comm hook
(hvd_compress/torch/frontends/ddp.py), once per codec from the same initial weights, ranks started as
subprocesses (``torchrun``-style environment, a free local port). Checks:

* accuracy: every codec within ``--max-gap`` (default 0.01, one point) of the first one (``none``);
  replicas bit-identical after training;
* host syncs per tensor (on CUDA): inside the hook, torch's sync detector
  (``torch.cuda.set_sync_debug_mode("warn")``, the check of tests/test_triton_kernels.py::
  test_gpu_hot_path_never_synchronises_with_the_host) counts device-to-host waits over a window of
  steps after warm-up, by source line. It fails when a compressing codec's hook waits for the host
  at least once per compressed tensor per step. Gloo stages every payload through host memory by
  design, so where NCCL refuses two ranks on one GPU (NCCL does not allow that) the 2-rank run uses
  Gloo and a 1-rank NCCL run makes this check. On CPU (the dry mode) the same window counts Python
  reads of tensor values (``.item()``, ``.tolist()``, ``bool(t)``, ...) by line instead:
  informational, not a check.

Backends: ``--backend auto`` (default): NCCL with one GPU per rank where there are enough GPUs,
else NCCL if a 2-rank probe on one GPU succeeds, else Gloo; Gloo on CPU.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import itertools
import json
import os
import platform
import re
import socket
import subprocess
import sys
import time
import traceback
import types
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SYNC_MSG = "synchroniz"  # torch's sync-debug warning: "called a synchronizing CUDA operation"


def say(msg: str) -> None:
    print(f"[gpu_check] {msg}", flush=True)


def write_json(path, obj) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=1, default=str))


# =============================================================================== env
def cmd_env(args) -> int:
    info = {"python": sys.version.split()[0], "executable": sys.executable, "platform": platform.platform()}
    for mod in ("torch", "triton", "numpy"):  # imported: the check needs them to work, not just exist
        try:
            m = importlib.import_module(mod)
            info[mod] = getattr(m, "__version__", "present")
        except Exception as exc:  # ImportError, or a broken install
            info[mod] = f"does not import ({type(exc).__name__}: {exc})"
    from importlib import metadata
    for dist in ("pytest", "pytest-timeout", "hypothesis", "horovod", "tensorflow", "tensorflow-cpu"):
        try:  # versions only: importing TF or Horovod would take seconds and is not needed
            info[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            info[dist] = "not installed"
    import torch
    info["torch_cuda"] = torch.version.cuda
    info["cuda_available"] = torch.cuda.is_available()
    if torch.cuda.is_available():
        info["devices"] = [f"{torch.cuda.get_device_name(i)} (sm_{''.join(map(str, torch.cuda.get_device_capability(i)))}, "
                           f"{torch.cuda.get_device_properties(i).total_memory / 2**30:.0f} GiB)"
                           for i in range(torch.cuda.device_count())]
        try:
            v = torch.cuda.nccl.version()
            info["nccl"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
        except Exception as exc:
            info["nccl"] = f"unavailable ({exc})"
    for k, v in info.items():
        print(f"{k:>15}: {v}")
    if args.out:
        write_json(Path(args.out) / "env.json", info)
    return 0


# ======================================================================== tests (no pytest)
class Skipped(Exception):
    pass


class _Mark:
    """``pytest.mark.NAME``: usable bare as a decorator or called with arguments."""

    def __init__(self, name, args=(), kwargs=None):
        self.name, self.args, self.kwargs = name, args, kwargs or {}

    def __call__(self, *args, **kwargs):
        if len(args) == 1 and not kwargs and inspect.isfunction(args[0]):  # decorating a test
            func = args[0]
            func.pytestmark = [*getattr(func, "pytestmark", []), self]
            return func
        return _Mark(self.name, args, kwargs)


class _MarkNamespace:
    def __getattr__(self, name):
        return _Mark(name)


def _raises(expected, match=None):
    @contextlib.contextmanager
    def ctx():
        try:
            yield
        except expected as exc:
            if match and not re.search(match, str(exc)):
                raise AssertionError(f"{type(exc).__name__}({exc}) does not match {match!r}")
            return
        raise AssertionError(f"DID NOT RAISE {expected}")
    return ctx()


def _warns(expected=Warning, match=None):
    @contextlib.contextmanager
    def ctx():
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            yield got
        if not any(issubclass(w.category, expected) and (not match or re.search(match, str(w.message))) for w in got):
            raise AssertionError(f"no {expected.__name__} matching {match!r} was emitted")
    return ctx()


def _fixture(*args, **kwargs):
    if len(args) == 1 and callable(args[0]) and not kwargs:
        return args[0]
    return lambda f: f


def pytest_stand_in() -> types.ModuleType:
    """The few pieces of pytest's API the test modules use at import and run time."""
    m = types.ModuleType("pytest")
    m.mark = _MarkNamespace()
    m.skip = lambda reason="": (_ for _ in ()).throw(Skipped(reason))
    m.fail = lambda msg="", pytrace=True: (_ for _ in ()).throw(AssertionError(msg))
    m.raises, m.warns, m.fixture = _raises, _warns, _fixture
    m.param = lambda *values, **kw: values

    def importorskip(name, minversion=None, reason=None):
        try:
            return importlib.import_module(name)
        except ImportError as exc:
            raise Skipped(reason or f"could not import {name!r}: {exc}")
    m.importorskip = importorskip
    m.__gpu_check_stand_in__ = True
    return m


def _marks(obj):
    marks = getattr(obj, "pytestmark", [])
    return list(marks) if isinstance(marks, (list, tuple)) else [marks]


def _cases(func):
    """(id, kwargs) per parameter combination of the parametrize marks."""
    axes = []
    for mark in _marks(func):
        if mark.name != "parametrize":
            continue
        names, values = mark.args[0], list(mark.args[1])
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        axis = []
        for v in values:
            vals = v if len(names) > 1 else (v,)
            axis.append(("-".join(str(x) for x in vals), dict(zip(names, vals))))
        axes.append(axis)
    for combo in itertools.product(*axes):
        yield "-".join(c[0] for c in combo), {k: v for c in combo for k, v in c[1].items()}


def cmd_tests(args) -> int:
    """Run the test functions carrying ``--marker`` (and/or matching ``-k``) without pytest."""
    try:
        if args.force_stand_in:
            raise ImportError("--force-stand-in")
        import pytest  # noqa: F401
    except ImportError as exc:
        sys.modules["pytest"] = pytest_stand_in()
        say(f"no pytest ({exc}): running the tests with a minimal stand-in for pytest (ci/gpu_check.py)")
    sys.path[:0] = [str(ROOT / "tests"), str(ROOT)]
    import torch
    cuda = torch.cuda.is_available()
    with contextlib.suppress(Exception):
        importlib.import_module("conftest")  # the suite's setup: TRITON_INTERPRET without a GPU, Triton first
    files = args.files or sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                                 if f"mark.{args.marker}" in p.read_text())
    counts = {"passed": 0, "failed": 0, "skipped": 0, "error": 0}
    results = []

    def record(nodeid, outcome, detail=""):
        counts[outcome] += 1
        results.append({"test": nodeid, "outcome": outcome, "detail": detail})
        print(f"{outcome.upper():>7} {nodeid}" + (f"  [{detail.splitlines()[-1][:160]}]" if detail else ""), flush=True)

    for file in files:
        name = Path(file).stem
        try:
            module = importlib.import_module(name)
        except Skipped as exc:  # a module-level importorskip
            record(file, "skipped", str(exc))
            continue
        except Exception:
            record(file, "error", traceback.format_exc())
            continue
        module_marks = _marks(module)
        for fname, func in sorted(vars(module).items()):
            if not (fname.startswith("test_") and inspect.isfunction(func)) or func.__module__ != module.__name__:
                continue
            marks = module_marks + _marks(func)
            names = {m.name for m in marks}
            if args.marker and args.marker not in names:
                continue
            if args.k and args.k not in fname:
                continue
            for case_id, kwargs in _cases(func):
                nodeid = f"{file}::{fname}" + (f"[{case_id}]" if case_id else "")
                reason = None
                if "gpu" in names and not cuda:
                    reason = "needs CUDA (torch.cuda.is_available() is false)"
                for m in marks:
                    if m.name == "skipif" and m.args and m.args[0]:
                        reason = m.kwargs.get("reason", "skipif")
                    if m.name == "skip":
                        reason = m.kwargs.get("reason", (m.args or ("skip",))[0])
                missing = [p for p in inspect.signature(func).parameters if p not in kwargs]
                if reason is None and missing:
                    reason = f"needs pytest fixtures {missing}: run this test under pytest"
                if reason:
                    record(nodeid, "skipped", reason)
                    continue
                t0 = time.perf_counter()
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        func(**kwargs)
                except Skipped as exc:
                    record(nodeid, "skipped", str(exc))
                except Exception:
                    record(nodeid, "failed", traceback.format_exc())
                else:
                    record(nodeid, "passed", "")
                results[-1]["seconds"] = round(time.perf_counter() - t0, 3)
    total = sum(counts.values())
    summary = ", ".join(f"{v} {k}" for k, v in counts.items() if v or k in ("passed", "failed"))
    print(f"{summary} (without pytest: ci/gpu_check.py tests)")
    if args.json:
        write_json(args.json, {"counts": counts, "results": results, "stand_in": "pytest" not in sys.modules
                               or getattr(sys.modules["pytest"], "__gpu_check_stand_in__", False)})
    if counts["failed"] or counts["error"]:
        return 1
    return 0 if total else 5  # pytest's code for "no tests collected"


# ================================================================================ DDP run
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_data(seed: int, device, dim: int = 32, classes: int = 10, n_train: int = 16384, n_test: int = 8192):
    """Gaussian clusters, two per class (so the boundary is not linear), seeded, on ``device``."""
    import torch
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(2 * classes, dim, generator=g) * 0.55

    def draw(n):
        comp = torch.randint(0, 2 * classes, (n,), generator=g)
        return centers[comp] + torch.randn(n, dim, generator=g) * 0.8, comp % classes

    (xtr, ytr), (xte, yte) = draw(n_train), draw(n_test)
    return [t.to(device) for t in (xtr, ytr, xte, yte)]


class SyncCounter:
    """Counts host synchronisations inside the hook while ``active``, by source line."""

    def __init__(self, cuda: bool):
        self.cuda, self.active = cuda, False
        self.sites: dict = {}
        self.calls = 0

    def _site(self, filename, lineno):
        try:
            filename = str(Path(filename).resolve().relative_to(ROOT))
        except ValueError:
            pass
        key = f"{filename}:{lineno}"
        self.sites[key] = self.sites.get(key, 0) + 1

    @contextlib.contextmanager
    def watch(self):
        if not self.active:
            yield
            return
        self.calls += 1
        if self.cuda:
            import torch
            with warnings.catch_warnings(record=True) as got:
                warnings.simplefilter("always")
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    yield
                finally:
                    torch.cuda.set_sync_debug_mode(0)
            for w in got:
                if SYNC_MSG in str(w.message):
                    self._site(w.filename, w.lineno)
        else:
            with self._host_reads():
                yield

    @contextlib.contextmanager
    def _host_reads(self):
        """CPU stand-in: Python-level reads of tensor values (each one a sync on a GPU tensor)."""
        import torch
        names = ("item", "tolist", "numpy", "__bool__", "__int__", "__float__")
        saved = {n: torch.Tensor.__dict__.get(n) for n in names}
        counter = self

        def wrap(name):
            original = getattr(torch.Tensor, name)

            def reader(self, *a, **kw):
                frame = sys._getframe(1)
                counter._site(frame.f_code.co_filename, frame.f_lineno)
                return original(self, *a, **kw)
            return reader

        for n in names:
            setattr(torch.Tensor, n, wrap(n))
        try:
            yield
        finally:
            for n, v in saved.items():
                if v is None:
                    delattr(torch.Tensor, n)
                else:
                    setattr(torch.Tensor, n, v)


def train(codec_name, data, args, rank, world, device, backend):
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    import hvd_compress.torch as hc
    xtr, ytr, xte, yte = data
    torch.manual_seed(args.seed)
    model = torch.nn.Sequential(torch.nn.Linear(xtr.shape[1], 256), torch.nn.ReLU(), torch.nn.Linear(256, 256),
                                torch.nn.ReLU(), torch.nn.Linear(256, 10)).to(device)
    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None, bucket_cap_mb=0.1)
    counter = SyncCounter(device.type == "cuda")
    state = None
    if codec_name != "ddp":
        state, hook = hc.ddp_comm_hook(codec_name, named_parameters=model.named_parameters())

        def counted(st, bucket):
            with counter.watch():
                return hook(st, bucket)
        ddp.register_comm_hook(state, counted)
    opt = torch.optim.SGD(ddp.parameters(), lr=args.lr, momentum=0.9)
    warm = min(5, args.steps // 4)
    window = range(warm, min(args.steps, warm + args.sync_steps))
    n = xtr.shape[0]
    losses = []
    t_start = None
    for step in range(args.steps):
        if step == warm:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t_start = time.perf_counter()
        counter.active = step in window
        g = torch.Generator().manual_seed(args.seed * 1_000_003 + step * world + rank)
        idx = torch.randint(0, n, (args.batch_size,), generator=g).to(device)
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(ddp(xtr[idx]), ytr[idx])
        loss.backward()
        opt.step()
        if step >= args.steps - 10:
            losses.append(float(loss.detach()))
    counter.active = False
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - (t_start or time.perf_counter())
    model.eval()
    with torch.no_grad():
        acc = float((model(xte).argmax(1) == yte).float().mean())
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    flat = flat if backend == "nccl" else flat.cpu()
    everyone = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(everyone, flat)
    compressed = 0
    if state is not None:
        compressed = sum(1 for p in model.parameters() if state.codec.should_compress(p.detach()))
    counted_steps = len(window)
    syncs = sum(counter.sites.values())
    return {"codec": codec_name, "accuracy": acc, "final_loss": sum(losses) / max(1, len(losses)),
            "steps": args.steps, "ms_per_step": 1000 * elapsed / max(1, args.steps - warm),
            "replicas_identical": all(torch.equal(everyone[0], e) for e in everyone),
            "describe": state.codec.describe() if state is not None else "DDP allreduce",
            "compressed_tensors": compressed, "tensors": len(list(model.parameters())),
            "sync": {"method": "torch.cuda.set_sync_debug_mode" if device.type == "cuda"
                     else "host reads of tensor values (CPU proxy)",
                     "counted_steps": counted_steps, "total": syncs,
                     "per_step": syncs / max(1, counted_steps),
                     "sites": dict(sorted(counter.sites.items(), key=lambda kv: -kv[1]))}}


def cmd_worker(args) -> int:
    import datetime

    import torch
    import torch.distributed as dist
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    if args.device == "cuda":
        device = torch.device("cuda", rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
        torch.set_num_threads(1)
    dist.init_process_group(args.backend, rank=rank, world_size=world, timeout=datetime.timedelta(seconds=120))
    out = Path(args.out)
    if args.probe:
        t = torch.ones(4, device=device if args.backend == "nccl" else "cpu")
        dist.all_reduce(t)
        ok = float(t[0]) == world
        dist.barrier()
        dist.destroy_process_group()
        write_json(out / f"rank{rank}.json", {"ok": ok})
        return 0
    data = make_data(args.seed, device)
    rows = [train(name, data, args, rank, world, device, args.backend) for name in args.codecs.split(",") if name]
    write_json(out / f"rank{rank}.json", {"rows": rows, "backend": args.backend, "world": world,
                                          "device": str(device)})
    dist.barrier()
    dist.destroy_process_group()
    return 0


def launch(args, world: int, backend: str, out: Path, timeout: float, probe: bool = False,
           codecs: str | None = None, steps: int | None = None):
    """Start ``world`` ranks of ``ddp-worker``; ``(results per rank or None, output tail)``."""
    out.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cmd = [sys.executable, str(Path(__file__).resolve()), "ddp-worker", "--device", args.device, "--backend", backend,
           "--out", str(out), "--codecs", codecs or args.codecs, "--steps", str(steps or args.steps),
           "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--seed", str(args.seed),
           "--sync-steps", str(args.sync_steps)] + (["--probe"] if probe else [])
    procs, logs = [], []
    for r in range(world):
        env = dict(os.environ, RANK=str(r), LOCAL_RANK=str(r), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port), PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        log = open(out / f"rank{r}.log", "w")
        logs.append(log)
        procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(ROOT)))
    deadline = time.time() + timeout
    timed_out = False
    for p in procs:
        try:
            p.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            timed_out = True
            break
    if timed_out:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for p in procs:
            p.wait()
    for log in logs:
        log.close()
    tail = "\n".join(f"--- rank {r} (exit {p.returncode}{', killed at the timeout' if timed_out else ''}) ---\n"
                     + (out / f"rank{r}.log").read_text(errors="replace")[-2500:] for r, p in enumerate(procs))
    files = [out / f"rank{r}.json" for r in range(world)]
    if timed_out or any(p.returncode for p in procs) or not all(f.exists() for f in files):
        return None, tail
    return {r: json.loads(f.read_text()) for r, f in enumerate(files)}, tail


def sync_verdict(row) -> tuple:
    """(ok, text): fails when the hook synchronises at least once per compressed tensor per step."""
    s = row["sync"]
    per_step, tensors = s["per_step"], row["compressed_tensors"]
    top = ", ".join(f"{k} x{v}" for k, v in list(s["sites"].items())[:6]) or "none"
    text = (f"{row['codec']}: {per_step:.1f} host syncs per step in the hook for {tensors} compressed tensors "
            f"({s['method']}, {s['counted_steps']} steps; sites: {top})")
    return (tensors == 0 or per_step < tensors), text


def cmd_ddp(args) -> int:
    import torch
    out = Path(args.out)
    if args.device == "cuda" and not torch.cuda.is_available():
        say("skipped: no CUDA (torch.cuda.is_available() is false); use --device cpu for the dry run")
        return 77
    backend, note = args.backend, ""
    if backend == "auto":
        if args.device == "cpu":
            backend = "gloo"
        elif torch.cuda.device_count() >= args.world:
            backend = "nccl"
        else:
            say(f"{torch.cuda.device_count()} GPU(s) for {args.world} ranks: probing NCCL with ranks sharing a GPU")
            res, tail = launch(args, args.world, "nccl", out / "nccl_probe", timeout=args.probe_timeout, probe=True)
            if res and all(r["ok"] for r in res.values()):
                backend = "nccl"
            else:
                backend = "gloo"
                why = [ln for ln in tail.splitlines() if "NCCL" in ln or "Error" in ln][-3:]
                note = "NCCL refused the ranks on one GPU, using Gloo: " + " | ".join(x.strip()[:200] for x in why)
                say(note)
    say(f"DDP run: {args.world} ranks, backend {backend}, device {args.device}, {args.steps} steps, codecs {args.codecs}")
    t0 = time.perf_counter()
    res, tail = launch(args, args.world, backend, out / "ddp", timeout=args.timeout)
    if res is None:
        print(tail)
        say("FAIL: the DDP run did not finish (output above)")
        return 1
    rows = res[0]["rows"]
    report = {"backend": backend, "note": note, "world": args.world, "device": args.device, "rows": rows,
              "seconds": round(time.perf_counter() - t0, 1)}
    ref = rows[0]
    print(f"\n{'codec':<26} {'accuracy':>8} {'gap':>7} {'loss':>7} {'ms/step':>8} {'replicas':>9} {'syncs/step':>10}")
    ok_acc = True
    for r in rows:
        gap = r["accuracy"] - ref["accuracy"]
        identical = all(res[k]["rows"][i]["replicas_identical"] for k in res for i, _ in enumerate(rows)
                        if res[k]["rows"][i]["codec"] == r["codec"])
        ok_acc &= abs(gap) <= args.max_gap + 1e-9 and identical
        print(f"{r['codec']:<26} {r['accuracy']:8.4f} {gap:+7.4f} {r['final_loss']:7.4f} {r['ms_per_step']:8.2f} "
              f"{'identical' if identical else 'DIFFER':>9} {r['sync']['per_step']:10.1f}")
    acc_text = (f"every codec within {args.max_gap:.3f} of {ref['codec']} ({ref['accuracy']:.4f}), replicas identical"
                if ok_acc else f"a codec is more than {args.max_gap:.3f} from {ref['codec']} or replicas differ")
    # host syncs: on CUDA over NCCL (Gloo copies every payload to the host by design)
    sync_rows, sync_src = rows, f"{args.world}-rank {backend} run"
    if args.device == "cuda" and backend != "nccl":
        say("host-sync check: a 1-rank NCCL run (the 2-rank run uses Gloo, which stages payloads on the host)")
        one, tail1 = launch(args, 1, "nccl", out / "sync_nccl", timeout=args.timeout,
                            codecs=",".join(c for c in args.codecs.split(",") if c != "ddp"),
                            steps=max(20, 2 * args.sync_steps))
        if one is None:
            print(tail1)
            sync_rows, sync_src = [], "1-rank NCCL run failed (output above)"
        else:
            sync_rows, sync_src = one[0]["rows"], "1-rank NCCL run"
            report["sync_run"] = sync_rows
    verdicts = [sync_verdict(r) for r in sync_rows if r["codec"] not in ("ddp", "none")]
    checked = args.device == "cuda" and bool(sync_rows)
    ok_sync = all(v[0] for v in verdicts) if checked else True
    print()
    for _, text in verdicts:
        print(f"  {text}")
    report.update(accuracy_ok=ok_acc, sync_ok=ok_sync if checked else None, sync_source=sync_src)
    write_json(out / "ddp.json", report)
    print(f"\nRESULT ddp-accuracy: {'PASS' if ok_acc else 'FAIL'}: {acc_text}")
    if checked:
        print(f"RESULT ddp-host-sync: {'PASS' if ok_sync else 'FAIL'}: "
              f"{'no' if ok_sync else 'a'} host sync per compressed tensor in the hook ({sync_src})")
    else:
        why = "CPU dry run: host reads listed above, informational" if args.device == "cpu" else sync_src
        print(f"RESULT ddp-host-sync: {'n/a' if args.device == 'cpu' else 'FAIL'}: {why}")
        ok_sync = args.device == "cpu"
    if note:
        print(f"note: {note}")
    return 0 if ok_acc and ok_sync else 1


# ================================================================================== main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="ci/gpu_check.py", description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    e = sub.add_parser("env")
    e.add_argument("--out")
    t = sub.add_parser("tests")
    t.add_argument("--marker", default="gpu")
    t.add_argument("-k", default=None, help="only test functions whose name contains this")
    t.add_argument("--files", nargs="*", help="test files (default: tests/test_*.py that use the marker)")
    t.add_argument("--json")
    t.add_argument("--force-stand-in", action="store_true", help="use the pytest stand-in even if pytest exists")
    for name in ("ddp", "ddp-worker"):
        d = sub.add_parser(name)
        d.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
        d.add_argument("--backend", choices=("auto", "nccl", "gloo"), default="auto")
        d.add_argument("--world", type=int, default=2)
        d.add_argument("--codecs", default="none,qsgd:bits=4")
        d.add_argument("--steps", type=int, default=300)
        d.add_argument("--batch-size", type=int, default=64)
        d.add_argument("--lr", type=float, default=0.05)
        d.add_argument("--seed", type=int, default=0)
        d.add_argument("--sync-steps", type=int, default=10, help="steps whose host syncs are counted")
        d.add_argument("--max-gap", type=float, default=0.01)
        d.add_argument("--timeout", type=float, default=240)
        d.add_argument("--probe-timeout", type=float, default=60)
        d.add_argument("--out", required=True)
        d.add_argument("--probe", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    return {"env": cmd_env, "tests": cmd_tests, "ddp": cmd_ddp, "ddp-worker": cmd_worker}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
