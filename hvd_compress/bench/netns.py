"""A throw-away network namespace with a rate-limited loopback, for the step benchmark.

``ShapedNamespace(rate)`` creates a namespace (``ip netns add``), brings its loopback up and puts a
token-bucket filter on it (``tc qdisc ... tbf rate RATE``); every process started with
:meth:`ShapedNamespace.command` talks over that shaped ``lo``. The namespace is deleted on exit of
the ``with`` block, on SIGTERM/SIGINT, and at interpreter exit, also when a step fails.

This kernel may lack ``netem`` (no delay emulation); ``tbf`` and ``htb`` are in every kernel that
has traffic control. Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path
from typing import List, Optional

SBIN = ("/usr/sbin", "/sbin", "/usr/bin", "/bin")


class NamespaceUnavailable(RuntimeError):
    """Root, ``ip``/``tc`` or namespace support is missing; the message says which and what to do."""


def tool(name: str) -> Optional[str]:
    path = shutil.which(name)
    if path:
        return path
    for d in SBIN:
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    return None


def parse_rate(text: str) -> float:
    """``"1gbit"``, ``"10gbit"``, ``"500mbit"``, ``"100mbps"`` (bytes) -> bits per second."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([kmgt]?)(bit|bps)?\s*", text.lower())
    if not m:
        raise ValueError(f"bad link rate {text!r}: use e.g. 1gbit, 10gbit, 500mbit")
    value = float(m.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "t": 1e12}[m.group(2)]
    if m.group(3) == "bps":
        value *= 8
    if value <= 0:
        raise ValueError(f"link rate must be positive, got {text!r}")
    return value


def format_rate(bits_per_s: float) -> str:
    for unit, scale in (("gbit", 1e9), ("mbit", 1e6), ("kbit", 1e3)):
        if bits_per_s >= scale:
            v = bits_per_s / scale
            return f"{v:g}{unit}" if v == int(v) else f"{v:.3g}{unit}"
    return f"{bits_per_s:g}bit"


def check_available() -> None:
    """Raise :class:`NamespaceUnavailable` with a clear reason unless namespaces can be made here."""
    if os.geteuid() != 0:
        raise NamespaceUnavailable(
            "the step benchmark needs root: it creates a network namespace (ip netns) and shapes "
            "its loopback with tc. Run it as root (e.g. sudo -E env PATH=$PATH python -m "
            "hvd_compress.bench step ...)."
        )
    missing = [t for t in ("ip", "tc") if tool(t) is None]
    if missing:
        raise NamespaceUnavailable(
            f"the step benchmark needs {' and '.join(missing)} (Debian: " "apt-get install iproute2)"
        )


_LIVE: List[str] = []
LIVE = _LIVE  # namespaces to delete at exit/signal (bench.cluster appends its own)
_CALLBACKS: List = []


def on_cleanup(fn) -> None:
    """Also call ``fn()`` at exit or on a signal, before the namespaces are deleted."""
    _CALLBACKS.append(fn)


def _cleanup_all(*_):
    for fn in list(_CALLBACKS):
        fn()
    for name in list(_LIVE):
        _delete(name)


def _delete(name: str) -> None:
    ip = tool("ip")
    if ip:
        subprocess.run([ip, "netns", "delete", name], capture_output=True)
    if name in _LIVE:
        _LIVE.remove(name)


_HOOKED = False


def tbf_args(rate_bits: float, latency_ms: float = 200.0) -> List[str]:
    """``tbf rate RATE burst B latency L``: ``burst`` 4 ms of traffic (at least 256 KiB, more than
    one 64 KiB GSO packet); queue up to ``latency_ms`` of traffic."""
    burst = max(256 * 1024, int(rate_bits / 8 * 0.004))
    return ["tbf", "rate", f"{int(rate_bits)}bit", "burst", str(burst), "latency", f"{latency_ms:g}ms"]


def _install_cleanup():
    global _HOOKED
    if _HOOKED:
        return
    _HOOKED = True
    atexit.register(_cleanup_all)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        previous = signal.getsignal(sig)

        def handler(signum, frame, previous=previous):
            _cleanup_all()
            if callable(previous):
                previous(signum, frame)
            else:
                raise SystemExit(128 + signum)

        try:
            signal.signal(sig, handler)
        except ValueError:  # not the main thread
            pass


class ShapedNamespace:
    """``with ShapedNamespace("1gbit") as ns: subprocess.run(ns.command([...]))``."""

    def __init__(self, rate_bits: float, name: Optional[str] = None, latency_ms: float = 200.0):
        check_available()
        self.name = name or f"hvdc-bench-{os.getpid()}"
        self.ip, self.tc = tool("ip"), tool("tc")
        self.rate_bits = rate_bits
        self.latency_ms = latency_ms
        self.qdisc = ""

    def _run(self, *args: str) -> str:
        proc = subprocess.run(list(args), capture_output=True, text=True)
        if proc.returncode != 0:
            raise NamespaceUnavailable(f"{' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def __enter__(self):
        _install_cleanup()
        _delete(self.name)  # a leftover from a killed run
        try:
            self._run(self.ip, "netns", "add", self.name)
        except NamespaceUnavailable as exc:
            raise NamespaceUnavailable(
                f"cannot create a network namespace here ({exc}); the "
                "step benchmark needs CAP_SYS_ADMIN and CAP_NET_ADMIN"
            )
        _LIVE.append(self.name)
        try:
            self._run(self.ip, "-n", self.name, "link", "set", "lo", "up")
            self.set_rate(self.rate_bits, add=True)
        except BaseException:
            _delete(self.name)
            raise
        return self

    def set_rate(self, rate_bits: float, add: bool = False) -> None:
        """Token bucket on lo: ``rate``; ``burst`` 4 ms of traffic (at least 256 KiB, more than
        one 64 KiB loopback packet); queue up to ``latency_ms`` of traffic."""
        self.rate_bits = rate_bits
        verb = "add" if add else "change"
        args = [self.tc, "-n", self.name, "qdisc", verb, "dev", "lo", "root", *tbf_args(rate_bits, self.latency_ms)]
        self._run(*args)
        self.qdisc = self._run(self.tc, "-n", self.name, "qdisc", "show", "dev", "lo").strip()

    def command(self, argv: List[str]) -> List[str]:
        return [self.ip, "netns", "exec", self.name] + list(argv)

    def tx_bytes(self) -> int:
        out = self._run(self.ip, "netns", "exec", self.name, "cat", "/sys/class/net/lo/statistics/tx_bytes")
        return int(out.strip())

    def __exit__(self, *exc):
        _delete(self.name)
        return False


delete = _delete
install_cleanup = _install_cleanup


def namespace_exists(name: str) -> bool:
    return Path(f"/run/netns/{name}").exists()
