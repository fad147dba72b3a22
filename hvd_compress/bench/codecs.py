"""``python -m hvd_compress.bench codecs``: encode+decode throughput of every codec.

For each codec (by default every registered codec, built with ``from_spec(name)``, plus a few
variants) and each tensor size, it times ``codec.encode`` followed by ``codec.decode`` on a random
fp32 tensor and reports GB/s *of fp32 input* (``4 * numel / seconds``), the median of repeated
timings. Beside it, all timed in the same run and interleaved so they see the same machine load:

* *plain*: the same codec with the native kernels switched off (``hvd_compress._native.forced(False)``,
  as ``HVD_COMPRESS_NATIVE=0`` does), i.e. the plain torch implementation that defines the wire
  format; timed only for codecs that have a native path (QSGD, TernGrad, OneBit, ScaledSign/EFSign);
* *ref*: the plain reference implementation of the same math (:mod:`hvd_compress.bench.reference`:
  straightforward torch ops, an unpacked int8 payload);

and the bits per value the codec puts on the wire (scales included). The roofline is the machine's
memory-copy bandwidth, measured the same way (``dst.copy_(src)`` of a preallocated fp32 tensor,
GB/s of fp32 copied) on a buffer larger than the last-level cache.

The kernels' threads follow ``--threads`` (``torch.set_num_threads``) unless
``HVD_COMPRESS_THREADS`` is set. On a loaded machine prefer ``--threads 1 --clock cpu`` (CPU time of
one core): wall-clock numbers then mostly measure the other processes.

Stochastic codecs draw their noise from a seeded ``torch.Generator`` (inside the timing, as in
training); TernGrad computes its own scale (``local_scale``) inside the timing.

``--baseline REF`` also times another version of the codecs in the same run, interleaved with the
current one (same machine load): REF is a git revision of this repository (exported with
``git archive``) or a directory holding an ``hvd_compress`` package. That is how the before/after
table in BENCHMARKS.md is made::

    python -m hvd_compress.bench codecs --baseline d838d68 --json bench/results/codecs.json

JSON (``--json PATH``)::

    {"rows": [{"codec": "qsgd:bits=4", "size": 1048576, "path": "native",
               "encode_decode_gbps": .., "encode_gbps": .., "decode_gbps": ..,
               "plain_gbps": .., "plain_encode_gbps": .., "plain_decode_gbps": ..,
               "reference_gbps": .., "bits_per_value": .., "copy_gbps": .., "baseline_gbps": ..}, ...],
     "copy_gbps": .., "threads": 2, "native": true, ...}

``path`` says what ``encode_decode_gbps`` measured: ``"native"`` (the fused kernels) or ``"plain"``
(a codec without a native path, or native kernels unavailable/switched off; ``plain_gbps`` is then
``null``).

``--device cuda`` times the same on the current GPU (``torch.cuda.synchronize()`` around each
timed call): ``path`` is then ``"triton"`` for the codecs with Triton kernels
(hvd_compress/torch/kernels), ``plain_gbps`` is the plain torch path forced with
``HVD_COMPRESS_BACKEND=plain`` (``null`` where that path cannot run on CUDA tensors),
``reference_gbps`` the straightforward torch ops on the GPU, and ``copy_gbps`` the
device-to-device copy bandwidth (the roofline)::

    python -m hvd_compress.bench codecs --device cuda --sizes 16m,64m --json gpu.json

``--framework tf`` times the TensorFlow codecs (default: the four target codecs) instead, eagerly
on the CPU: ``encode_decode_gbps`` is the TF codec as it runs (``path`` ``"native"``: the C kernels
behind :mod:`hvd_compress.tensorflow.native`), ``tf_plain_gbps`` the same TF codec with the native
path off (the plain TF ops, the path before the kernels), ``torch_gbps`` the torch codec of the same
spec (native kernels), all interleaved in the same run. Stochastic codecs get a stateless seed
(as the exchange passes), TernGrad computes its ``local_scale`` inside the timing::

    OMP_NUM_THREADS=1 python -m hvd_compress.bench codecs --framework tf --threads 1 --sizes 4m \
        --json bench/results/tf_codecs.json
"""

from __future__ import annotations

import argparse
import atexit
import io
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

from hvd_compress.bench.common import write_json
from hvd_compress.bench.reference import reference_for

DEFAULT_SIZES = [1 << 16, 1 << 20, 1 << 24]
VARIANTS = ["qsgd:bits=8", "qsgd:bits=2,bucket_size=128"]
# The four codecs issue #8 holds to >= 1 GB/s of fp32 input on two cores.
TARGETS = ("qsgd", "onebit", "efsign", "terngrad")
# On a GPU (issue #12): >= 1 TB/s of fp32 input for these, and >= 20x the plain torch-ops path.
GPU_TARGETS = ("qsgd", "onebit", "efsign")
GPU_MIN_GBPS, GPU_MIN_VS_PLAIN = 1000.0, 20.0
REPO = Path(__file__).resolve().parents[2]


def default_specs() -> List[str]:
    """Every registered codec with a self-contained per-tensor payload (PowerSGD and GradiVeQ run a
    multi-round schedule instead, ``python -m hvd_compress.bench aggregation`` times those; Lattice
    decodes against the receiver's own model)."""
    from hvd_compress.torch.codecs.base import Codec
    from hvd_compress.torch.spec import registry

    out = []
    for name, cls in registry().items():
        if cls.custom_exchange is not Codec.custom_exchange or getattr(cls, "needs_reference", False):
            continue
        out.append(name)
        if name == "qsgd":
            out += VARIANTS
    return out


# ----------------------------------------------------------------------------- timing
def _median_time(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


_device = torch.device("cpu")


def _sync() -> None:
    """Wait for the device (CUDA kernels run asynchronously; the CPU paths need nothing)."""
    if _device.type == "cuda":
        torch.cuda.synchronize(_device)


def copy_bandwidth(numel: int, repeats: int = 7) -> float:
    """GB/s of fp32 copied by ``dst.copy_(src)`` (preallocated): the memory roofline."""
    src = torch.randn(numel, device=_device)
    dst = torch.empty_like(src)
    dst.copy_(src)

    def copy():
        dst.copy_(src)
        _sync()

    _sync()
    times = [_median_time(copy) for _ in range(repeats)]
    return 4.0 * numel / statistics.median(times) / 1e9


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
_clock = time.perf_counter


AGGREGATE_WORKERS = 4  # payloads per timed aggregate (the exchange's decode-and-combine step)


class _Timed:
    """One implementation to time: encode then decode, with fresh seeded noise each repeat; with
    ``aggregate``, also the combination of :data:`AGGREGATE_WORKERS` workers' payloads (this
    repeat's and those of ``others``, made once by :meth:`prepare`)."""

    def __init__(self, label, encode, decode, stochastic, aggregate=None):
        self.label, self.encode, self.decode, self.stochastic = label, encode, decode, stochastic
        self.aggregate = aggregate
        self.others: List[object] = []
        self.enc: List[float] = []
        self.dec: List[float] = []
        self.agg: List[float] = []
        self.total: List[float] = []

    def prepare(self, x: torch.Tensor) -> None:
        """Other workers' payloads for the timed aggregate: encodings of different tensors, so
        a vote sees the ties and splits of real workers, not unanimous copies."""
        if self.aggregate is not None:
            g = torch.Generator().manual_seed(7) if self.stochastic else None
            self.others = [self.encode(t, g) for t in (x.flip(0), x.roll(1), -x.roll(2))[: AGGREGATE_WORKERS - 1]]

    def run(self, x: torch.Tensor, rep: int):
        g = torch.Generator().manual_seed(1000 + rep) if self.stochastic else None
        _sync()
        t0 = _clock()
        payload = self.encode(x, g)
        _sync()
        t1 = _clock()
        self.decode(payload, x.numel())
        _sync()
        t2 = _clock()
        self.enc.append(t1 - t0)
        self.dec.append(t2 - t1)
        self.total.append(t2 - t0)
        if self.aggregate is not None:
            t3 = _clock()
            self.aggregate([payload] + self.others, x.numel())
            _sync()
            self.agg.append(_clock() - t3)

    def clear(self) -> None:
        self.enc.clear(), self.dec.clear(), self.agg.clear(), self.total.clear()

    def gbps(self, numel: int) -> Dict[str, float]:
        gb = 4.0 * numel / 1e9
        out = {
            "encode_decode_gbps": gb / statistics.median(self.total),
            "encode_gbps": gb / statistics.median(self.enc),
            "decode_gbps": gb / statistics.median(self.dec),
        }
        if self.agg:  # GB/s of the fp32 values the workers' payloads stand for
            out["aggregate_gbps"] = AGGREGATE_WORKERS * gb / statistics.median(self.agg)
        return out


def _codec_timed(label, codec) -> Optional[_Timed]:
    try:
        codec.payload_nbytes(1024)
    except NotImplementedError:
        return None
    return _Timed(label, lambda x, g: codec.encode(x, g), codec.decode, bool(codec.stochastic), codec.aggregate)


def _plain_timed(codec) -> _Timed:
    """The same codec with the native kernels switched off for the duration of each call."""
    from hvd_compress import _native
    from hvd_compress.torch.kernels import backend

    def encode(x, g):
        with _native.forced(False), backend.forced("plain"):
            return codec.encode(x, g)

    def decode(payload, numel):
        with _native.forced(False), backend.forced("plain"):
            return codec.decode(payload, numel)

    def aggregate(payloads, numel):
        with _native.forced(False), backend.forced("plain"):
            return codec.aggregate(payloads, numel)

    return _Timed("plain", encode, decode, bool(codec.stochastic), aggregate)


def measure(
    specs: List[str],
    sizes: List[int],
    repeats: int = 5,
    min_time: float = 0.0,
    baseline: Optional[Callable] = None,
    reference: bool = True,
    progress: Optional[Callable[[str], None]] = None,
) -> List[dict]:
    """Rows of throughput per (codec, size). Current code, reference and baseline are timed in
    round-robin within each repeat so they see the same machine load."""
    from hvd_compress.torch import from_spec

    rows = []
    for size in sizes:
        x = (torch.randn(size, generator=torch.Generator().manual_seed(size)) * 1e-2).to(_device)
        copy_gbps = copy_bandwidth(size)
        for spec in specs:
            codec = from_spec(spec)
            mine = _codec_timed("codec", codec)
            if mine is None:
                if progress:
                    progress(f"skip {spec}: no encode/decode (custom exchange)")
                continue
            contenders = [mine]
            native_path = has_native_path(codec)
            plain = _plain_timed(codec) if native_path or _device.type == "cuda" else None
            if plain is not None:
                contenders.append(plain)
            ref = reference_for(codec) if reference else None
            ref_t = None
            if ref is not None:
                ref_t = _Timed("reference", ref[0], ref[1], True)
                contenders.append(ref_t)
            base = None
            if baseline is not None:
                try:
                    base = _codec_timed("baseline", baseline(spec))
                except Exception as exc:  # the old version may not know this codec
                    if progress:
                        progress(f"baseline has no {spec}: {exc}")
                if base is not None:
                    contenders.append(base)
            skipped = False
            for c in list(contenders):  # warm-up (first-touch of buffers, lazy tables, JIT)
                try:
                    c.prepare(x)
                    c.run(x, -1)
                except (RuntimeError, ValueError, TypeError) as exc:
                    if _device.type == "cpu":
                        raise
                    if c is mine:  # a codec without a device path (its plain code is CPU-only)
                        if progress:
                            progress(f"skip {spec}: does not run on {_device}: {str(exc)[:120]}")
                        skipped = True
                        break
                    if progress:  # e.g. a plain path that cannot run on CUDA tensors
                        progress(f"{spec}: {c.label} does not run on {_device}: {str(exc)[:120]}")
                    contenders.remove(c)
                    plain = None if c is plain else plain
                    ref_t, ref = (None, None) if c is ref_t else (ref_t, ref)
                c.clear()
            if skipped:
                continue
            rep, t_start = 0, time.perf_counter()
            while rep < repeats or (time.perf_counter() - t_start < min_time and rep < 50):
                for c in contenders if rep % 2 == 0 else contenders[::-1]:
                    c.run(x, rep)
                rep += 1
            row = {
                "codec": spec,
                "describe": codec.describe(),
                "size": size,
                "path": _path_name(codec, native_path),
                "device": str(_device),
                "bits_per_value": codec.nominal_bits(size),
                "copy_gbps": copy_gbps,
                "repeats": rep,
            }
            row.update(mine.gbps(size))
            row["plain_gbps"] = row["plain_encode_gbps"] = row["plain_decode_gbps"] = None
            if plain is not None:
                p = plain.gbps(size)
                row["plain_gbps"] = p["encode_decode_gbps"]
                row["plain_encode_gbps"] = p["encode_gbps"]
                row["plain_decode_gbps"] = p["decode_gbps"]
                row["plain_aggregate_gbps"] = p.get("aggregate_gbps")
            row["reference_gbps"] = ref_t.gbps(size)["encode_decode_gbps"] if ref else None
            if base is not None:
                b = base.gbps(size)
                row["baseline_gbps"] = b["encode_decode_gbps"]
                row["baseline_encode_gbps"] = b["encode_gbps"]
                row["baseline_decode_gbps"] = b["decode_gbps"]
                row["speedup_vs_baseline"] = row["encode_decode_gbps"] / b["encode_decode_gbps"]
            rows.append(row)
            if progress:
                progress(_format_row(row))
    return rows


def _tf_timed(label, codec, native_on: bool) -> _Timed:
    """A TF codec, with the native path forced on or off; inputs converted once, outside timing."""
    import tensorflow as tf
    from hvd_compress import _native

    cache = {}

    def tf_input(x):
        if cache.get("src") is not x:
            cache["src"], cache["tf"] = x, tf.constant(x.cpu().numpy())
        return cache["tf"]

    def encode(x, g):
        t = tf_input(x)
        kw = {}
        if codec.stochastic:
            kw["seed"] = tf.constant([int(g.initial_seed()) if g is not None else 0, 1], tf.int64)
        with _native.forced(native_on):
            if codec.shared_scale:
                kw["scale"] = codec.local_scale(t)
            return codec.encode(t, **kw)

    def decode(payload, numel):
        with _native.forced(native_on):
            return codec.decode(payload, numel)

    return _Timed(label, encode, decode, True)


def measure_tf(
    specs: List[str],
    sizes: List[int],
    repeats: int = 5,
    min_time: float = 0.0,
    progress: Optional[Callable[[str], None]] = None,
) -> List[dict]:
    """``--framework tf`` rows: the TF codec (native path), the same codec's plain TF ops and the
    torch codec, interleaved per repeat."""
    import hvd_compress.tensorflow as hct
    from hvd_compress import _native
    from hvd_compress.tensorflow import native as tf_native
    from hvd_compress.torch import from_spec

    rows = []
    for size in sizes:
        x = torch.randn(size, generator=torch.Generator().manual_seed(size)) * 1e-2
        copy_gbps = copy_bandwidth(size)
        for spec in specs:
            tcodec, fcodec = from_spec(spec), hct.from_spec(spec)
            torch_t = _codec_timed("torch", tcodec)
            fast, plain = _tf_timed("tf", fcodec, True), _tf_timed("tf-plain", fcodec, False)
            contenders = [fast, plain] + ([torch_t] if torch_t is not None else [])
            for c in contenders:
                c.run(x, -1)
                c.clear()
            rep, t_start = 0, time.perf_counter()
            while rep < repeats or (time.perf_counter() - t_start < min_time and rep < 50):
                for c in contenders if rep % 2 == 0 else contenders[::-1]:
                    c.run(x, rep)
                rep += 1
            q = fcodec
            while hasattr(q, "inner"):
                q = q.inner
            native_path = _native.enabled() and q.name in ("qsgd", "terngrad", "onebit_quantizer", "scaled_sign")
            row = {
                "codec": spec,
                "describe": fcodec.describe(),
                "size": size,
                "framework": "tf",
                "path": "native" if native_path else "plain",
                "device": "cpu",
                "bits_per_value": fcodec.nominal_bits(size),
                "copy_gbps": copy_gbps,
                "repeats": rep,
                "tf_threads": tf_native.threads(),
            }
            row.update(fast.gbps(size))
            p = plain.gbps(size)
            row["tf_plain_gbps"], row["tf_plain_encode_gbps"], row["tf_plain_decode_gbps"] = (
                p["encode_decode_gbps"],
                p["encode_gbps"],
                p["decode_gbps"],
            )
            row["speedup_vs_tf_plain"] = row["encode_decode_gbps"] / row["tf_plain_gbps"]
            row["torch_gbps"] = torch_t.gbps(size)["encode_decode_gbps"] if torch_t is not None else None
            rows.append(row)
            if progress:
                progress(_format_tf_row(row))
    return rows


def _format_tf_row(r: dict) -> str:
    return (
        f"{r['codec'][:30]:<30} {r['size']:>10,} {r['path']:>6} {r['encode_decode_gbps']:8.2f} "
        f"{r['encode_gbps']:8.2f} {r['decode_gbps']:8.2f} {_fmt(r['tf_plain_gbps'])} "
        f"{r['speedup_vs_tf_plain']:7.1f}x {_fmt(r['torch_gbps'])} {r['bits_per_value']:7.3f}"
    )


def format_tf_table(result: dict) -> str:
    head = (
        f"{'codec':<30} {'size':>10} {'path':>6} {'tf':>8} {'encode':>8} {'decode':>8} "
        f"{'tf plain':>8} {'speedup':>8} {'torch':>8} {'bits/v':>7}"
    )
    lines = [head, "-" * len(head)] + [_format_tf_row(r) for r in result["rows"]]
    lines.append(
        f"GB/s of fp32 input, encode+decode (median of repeats, clock: {result.get('clock', 'wall')}); "
        "tf: the TF codec as it runs (native kernels); tf plain: the same codec's plain TF ops "
        "(HVD_COMPRESS_NATIVE=0, the path before the kernels); torch: the torch codec (native). "
        f"Memory-copy roofline: {result['copy_gbps']:.2f} GB/s."
    )
    return "\n".join(lines)


def _path_name(codec, native_path: bool) -> str:
    if _device.type == "cuda":
        from hvd_compress.torch.kernels import runs_on_device

        return "triton" if runs_on_device(codec, _device) else "plain"
    return "native" if native_path else "plain"


def has_native_path(codec) -> bool:
    """Whether ``codec`` (or the quantizer inside its wrappers) runs the native kernels here."""
    from hvd_compress import _native
    from hvd_compress._native.ops import NATIVE_CODECS

    q = codec
    while hasattr(q, "inner"):
        q = q.inner
    return getattr(q, "name", "") in NATIVE_CODECS and _native.enabled()


# ----------------------------------------------------------------------------- baseline
def load_baseline(ref: str) -> Callable:
    """``from_spec`` of another version of hvd_compress, imported side by side with this one.

    ``ref`` is a directory containing ``hvd_compress/`` or a git revision of this repository.
    The old package is imported under its own name while this one's modules are set aside in
    ``sys.modules``, then this one is put back; the old codec objects keep their own module
    globals, so both versions run in one process.
    """
    path = Path(ref)
    if (path / "hvd_compress" / "torch").is_dir():
        root = path
    else:
        root = Path(tempfile.mkdtemp(prefix="hvdc-baseline-"))
        atexit.register(shutil.rmtree, root, ignore_errors=True)
        try:
            blob = subprocess.run(
                ["git", "-C", str(REPO), "archive", ref, "hvd_compress"], check=True, capture_output=True
            ).stdout
        except (OSError, subprocess.CalledProcessError) as exc:
            err = getattr(exc, "stderr", b"") or b""
            raise SystemExit(
                f"--baseline {ref!r}: neither a directory with hvd_compress/ nor a git "
                f"revision of {REPO}: {err.decode(errors='replace').strip() or exc}"
            )
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            tar.extractall(root)

    def ours():
        return {k: m for k, m in sys.modules.items() if k == "hvd_compress" or k.startswith("hvd_compress.")}

    current = ours()
    for k in current:
        del sys.modules[k]
    sys.path.insert(0, str(root))
    try:
        import hvd_compress.torch  # noqa: F401 - the old tree's package
        import hvd_compress.torch.spec as old_spec

        old_modules = ours()
    finally:
        sys.path.remove(str(root))
        for k in ours():
            del sys.modules[k]
        sys.modules.update(current)

    def old_from_spec(spec):
        # from_spec imports the codecs lazily: run it with the old modules in place
        mine = ours()
        for k in mine:
            del sys.modules[k]
        sys.modules.update(old_modules)
        try:
            return old_spec.from_spec(spec)
        finally:
            for k in ours():
                del sys.modules[k]
            sys.modules.update(mine)

    return old_from_spec


# ----------------------------------------------------------------------------- output
def _fmt(v, spec="{:8.2f}"):
    return spec.format(v) if v is not None else f"{'-':>8}"


def _format_row(r: dict) -> str:
    base = ""
    if "baseline_gbps" in r:
        base = f" {_fmt(r['baseline_gbps'])} {r['speedup_vs_baseline']:7.1f}x"
    ref = r.get("reference_gbps")
    plain = r.get("plain_gbps")
    vs_ref = f"{r['encode_decode_gbps'] / ref:6.1f}x" if ref else f"{'-':>7}"
    vs_plain = f"{r['encode_decode_gbps'] / plain:7.1f}x" if plain else f"{'-':>8}"
    return (
        f"{r['codec'][:30]:<30} {r['size']:>10,} {r.get('path', '-'):>6} {r['encode_decode_gbps']:8.2f} "
        f"{r['encode_gbps']:8.2f} {r['decode_gbps']:8.2f} {_fmt(plain)} {vs_plain} {_fmt(ref)} "
        f"{vs_ref}{base} {_fmt(r.get('aggregate_gbps'))} {_fmt(r.get('plain_aggregate_gbps'))} "
        f"{r['bits_per_value']:7.3f} "
        f"{100 * r['encode_decode_gbps'] / r['copy_gbps']:6.1f}%"
    )


def format_table(result: dict) -> str:
    has_base = any("baseline_gbps" in r for r in result["rows"])
    head = (
        f"{'codec':<30} {'size':>10} {'path':>6} {'enc+dec':>8} {'encode':>8} {'decode':>8} "
        f"{'plain':>8} {'vs plain':>8} {'ref':>8} {'vs ref':>7}"
    )
    if has_base:
        head += f" {'before':>8} {'speedup':>8}"
    head += f" {'agg x' + str(AGGREGATE_WORKERS):>8} {'plain ag':>8} {'bits/v':>7} {'of copy':>7}"
    lines = [head, "-" * len(head)]
    lines += [_format_row(r) for r in result["rows"]]
    cuda = str(result.get("device", "cpu")).startswith("cuda")
    path_note = "path: triton kernels or plain torch ops on the GPU" if cuda else "path: native kernels or plain torch"
    plain_note = (
        "the same codec on the plain torch-ops path (HVD_COMPRESS_BACKEND=plain), same GPU"
        if cuda
        else "the same codec with the native kernels off (HVD_COMPRESS_NATIVE=0)"
    )
    roof = (
        f"Device-to-device copy roofline ({result.get('gpu') or result.get('device')}): "
        f"{result['copy_gbps']:.2f} GB/s."
        if cuda
        else f"Memory-copy roofline: {result['copy_gbps']:.2f} GB/s ({result['threads']} threads)."
    )
    lines.append(
        f"GB/s of fp32 input (median of repeats, clock: {result.get('clock', 'wall')}); "
        f"enc+dec/encode/decode: the codec as it runs ({path_note}); "
        f"plain: {plain_note}; "
        f"ref: plain torch with an unpacked int8 payload; agg x{AGGREGATE_WORKERS} / plain ag: "
        f"the exchange's combination of {AGGREGATE_WORKERS} workers' payloads (GB/s of the fp32 "
        f"values they stand for), as it runs / plain; of copy: enc+dec / copy bandwidth at "
        f"that size. {roof}"
    )
    return "\n".join(lines)


def targets_summary(result: dict) -> str:
    """Issue #8's bar: QSGD, OneBit, EFSign, TernGrad >= 1 GB/s (goal 40% of copy bandwidth)."""
    lines = []
    for name in TARGETS:
        rows = [r for r in result["rows"] if r["codec"] == name]
        for r in rows:
            ok = r["encode_decode_gbps"] >= 1.0
            goal = r["encode_decode_gbps"] >= 0.4 * result["copy_gbps"]
            plain = f" (plain {r['plain_gbps']:.2f})" if r.get("plain_gbps") else ""
            lines.append(
                f"{name:<9} size {r['size']:>10,}: {r['encode_decode_gbps']:6.2f} GB/s{plain} "
                f"[{'>= 1 GB/s' if ok else 'BELOW 1 GB/s'}; "
                f"{100 * r['encode_decode_gbps'] / result['copy_gbps']:.0f}% of the "
                f"{result['copy_gbps']:.1f} GB/s copy roofline{' (goal met)' if goal else ''}]"
            )
    return "\n".join(lines)


def gpu_targets_summary(result: dict) -> str:
    """Issue #12's bar on a GPU: QSGD-4, OneBit, EFSign >= 1 TB/s of fp32 input (goal: 40% of the
    device copy bandwidth) and >= 20x the plain torch-ops path on the same GPU."""
    lines = []
    copy = result["copy_gbps"]
    for name in GPU_TARGETS:
        for r in (r for r in result["rows"] if r["codec"] == name):
            gbps, plain = r["encode_decode_gbps"], r.get("plain_gbps")
            vs = gbps / plain if plain else None
            ok = gbps >= GPU_MIN_GBPS and vs is not None and vs >= GPU_MIN_VS_PLAIN
            lines.append(
                f"{name:<7} size {r['size']:>11,} [{r['path']}]: {gbps:8.1f} GB/s, "
                f"{100 * gbps / copy:4.0f}% of the {copy:.0f} GB/s device copy, "
                f"{'-' if vs is None else f'{vs:.1f}x'} the plain path "
                f"[{'meets' if ok else 'BELOW'} >= {GPU_MIN_GBPS:.0f} GB/s and >= {GPU_MIN_VS_PLAIN:.0f}x plain"
                f"{'; goal 40% of copy met' if gbps >= 0.4 * copy else ''}]"
            )
    return "\n".join(lines)


def _native_threads() -> int:
    from hvd_compress._native.ops import threads

    return threads()


def _loadavg():
    try:
        return list(os.getloadavg())
    except OSError:
        return None


def parse_sizes(text: str) -> List[int]:
    out = []
    for tok in text.replace(",", " ").split():
        tok = tok.strip().lower()
        mult = 1
        for suffix, m in (("k", 1 << 10), ("m", 1 << 20)):
            if tok.endswith(suffix):
                tok, mult = tok[:-1], m
        try:
            value = int(float(tok) * mult)
        except ValueError:
            raise argparse.ArgumentTypeError(f"bad size {tok!r}: use integers, e.g. 65536,1m,16m")
        if value <= 0:
            raise argparse.ArgumentTypeError(f"sizes must be positive, got {value}")
        out.append(value)
    if not out:
        raise argparse.ArgumentTypeError("no sizes given")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m hvd_compress.bench codecs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument(
        "--sizes",
        type=parse_sizes,
        default=DEFAULT_SIZES,
        help="tensor sizes in values, e.g. 65536,1m,16m (default: 64k,1m,16m)",
    )
    ap.add_argument(
        "--codecs",
        default=None,
        help="codec specs separated by ';' (default: every registered codec and a few variants)",
    )
    ap.add_argument(
        "--threads", type=int, default=os.cpu_count(), help="torch.set_num_threads (default: all cores, %(default)s)"
    )
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats per codec and size (median)")
    ap.add_argument(
        "--min-time",
        type=float,
        default=0.0,
        help="keep repeating (up to 50) until this many seconds were spent per codec and size",
    )
    ap.add_argument(
        "--clock",
        choices=sorted(CLOCKS),
        default="wall",
        help="wall: elapsed time (default); cpu: CPU time of the whole process (all its "
        "threads), steadier on a loaded machine",
    )
    ap.add_argument("--baseline", help="also time another version: a git revision or a directory with hvd_compress/")
    ap.add_argument("--no-reference", action="store_true", help="skip the plain reference implementations")
    ap.add_argument("--json", help="write the result as JSON here")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]: time the codecs on that device")
    ap.add_argument(
        "--framework",
        choices=("torch", "tf"),
        default="torch",
        help="torch (default) or tf: time the TensorFlow codecs (native path, plain TF ops, "
        "torch beside them); default codecs then: " + ", ".join(TARGETS),
    )
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    global _device
    _device = torch.device(args.device)
    if _device.type == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda: torch.cuda.is_available() is false on this machine")
    if _device.type == "cuda" and _device.index is None:
        _device = torch.device("cuda", torch.cuda.current_device())
    if args.threads < 1:
        ap.error("--threads must be >= 1")
    torch.set_num_threads(args.threads)
    global _clock
    _clock = CLOCKS[args.clock]
    if args.framework == "tf" and (_device.type != "cpu" or args.baseline):
        ap.error("--framework tf times the CPU codecs of this tree: no --device cuda or --baseline")
    specs = (
        [s.strip() for s in args.codecs.split(";") if s.strip()]
        if args.codecs
        else (list(TARGETS) if args.framework == "tf" else default_specs())
    )
    from hvd_compress.torch import from_spec

    for s in specs:
        from_spec(s)  # a bad spec fails before any timing, listing what exists
    baseline = load_baseline(args.baseline) if args.baseline else None
    say = None if args.quiet else (lambda line: print(line, file=sys.stderr, flush=True))
    roof_numel = max(max(args.sizes), 1 << 24 if _device.type == "cpu" else 1 << 28)  # beyond the caches
    from hvd_compress import _native

    result = {
        "copy_gbps": copy_bandwidth(roof_numel),
        "copy_numel": roof_numel,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "native": _native.enabled(),
        "native_threads": _native_threads(),
        "load_average": _loadavg(),
        "machine": platform.processor() or platform.machine(),
        "device": str(_device),
        "gpu": torch.cuda.get_device_name(_device) if _device.type == "cuda" else None,
        "torch": torch.__version__,
        "baseline": args.baseline,
        "clock": args.clock,
        "command": "python -m hvd_compress.bench codecs " + " ".join(argv if argv is not None else sys.argv[1:]),
    }
    result["framework"] = args.framework
    if args.framework == "tf":
        result["rows"] = measure_tf(specs, args.sizes, args.repeats, args.min_time, progress=say)
        print(format_tf_table(result))
        print()
        for r in result["rows"]:
            print(
                f"{r['codec']:<12} size {r['size']:>10,}: TF {r['encode_decode_gbps']:.2f} GB/s "
                f"(plain TF {r['tf_plain_gbps']:.2f}, torch {_fmt(r['torch_gbps'], '{:.2f}')}) "
                f"[{'>= 1 GB/s' if r['encode_decode_gbps'] >= 1.0 else 'BELOW 1 GB/s'}]"
            )
        write_json(args.json, result)
        return 0
    result["rows"] = measure(
        specs, args.sizes, args.repeats, args.min_time, baseline, reference=not args.no_reference, progress=say
    )
    print(format_table(result))
    print()
    print(gpu_targets_summary(result) if _device.type == "cuda" else targets_summary(result))
    write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
