"""An emulated cluster on one machine: one network namespace per host, a shaped link between them,
sshd in every host, so ``horovodrun -H host1:2,host2:2``, ``torchrun --nnodes 2`` and a multi-node
Ray cluster launch exactly as they would across real machines.

Layout (``EmulatedCluster(hosts=2, link="1gbit")``)::

    ns hvdc<pid>-host1            ns hvdc<pid>-sw                ns hvdc<pid>-host2
    eth0 10.213.<k>.1 ===veth=== vhost1 --[br0]-- vhost2 ===veth=== eth0 10.213.<k>.2
    lo (unshaped)                                                lo (unshaped)

* **The link**: a token bucket (``tc ... tbf rate RATE``) on both ends of each host's veth, so
  every host has a full-duplex RATE NIC into a switch (the bridge). This kernel lacks ``netem``,
  so there is rate but no propagation delay. Ranks inside one host talk over their own ``lo``
  (a host's traffic to its own address is routed over ``lo``), unshaped: the fast intra-host leg.
* **Names**: ``host1``, ``host2``, ... resolve inside every namespace through
  ``/etc/netns/<ns>/hosts``, which ``ip netns exec`` bind-mounts over ``/etc/hosts`` for that
  namespace only; the machine's own ``/etc/hosts`` is never touched.
* **ssh**: one ``sshd`` per host on port 22 of its address, with its own host key and a generated
  client key in ``authorized_keys``; ``/etc/netns/<ns>/ssh/ssh_config`` (bind-mounted over
  ``/etc/ssh`` the same way) makes plain ``ssh host2`` use that key and skip host-key checks, so
  ``horovodrun``'s own ``ssh`` calls work unchanged.
* **Bytes**: :meth:`EmulatedCluster.tx_bytes` reads each host's ``eth0`` counters
  (``/sys/class/net/eth0/statistics/tx_bytes`` in that namespace); every inter-host byte leaves
  exactly one host's ``eth0``, so their sum is the inter-host traffic.

Usage::

    from hvd_compress.bench.cluster import EmulatedCluster
    with EmulatedCluster(hosts=2, link="1gbit") as c:
        c.run("host1", ["horovodrun", "-np", "4", "-H", "host1:2,host2:2", "--gloo",
                        "--network-interface", "eth0", "python", "train.py"], env=c.env())
        print(c.inter_host_bytes())

Launching Horovod. Run ``horovodrun`` *inside* host1 (:meth:`run`/:meth:`popen`/:meth:`command`)
with ``--network-interface eth0`` (skips Horovod's slow interface probe over ssh, and keeps Gloo
off ``lo`` for the cross-host leg) and ``HOROVOD_GLOO_IFACE=eth0`` (set by :meth:`env`). Horovod
forwards the launching environment (PATH, PYTHONPATH, OMP_NUM_THREADS, ...) on its ssh command
line, and every host sees the same filesystem, so the same python and code run everywhere.
torchrun: one ``torchrun --nnodes 2 --node_rank i --master_addr host1`` per host. Ray:
``ray start --head --node-ip-address host1-ip`` in host1, ``ray start --address host1-ip:6379`` in
host2.

Teardown: processes left in the namespaces (sshd, workers, Ray) are killed, namespaces and their
``/etc/netns`` files are deleted, on leaving the ``with`` block, on a failed setup, on SIGTERM /
SIGINT / SIGHUP and at interpreter exit. Needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN), ``ip``, ``tc``,
and ``sshd``/``ssh``/``ssh-keygen`` (Debian: ``apt-get install openssh-server openssh-client``);
otherwise :class:`NamespaceUnavailable` says which is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional

from hvd_compress.bench import netns
from hvd_compress.bench.netns import NamespaceUnavailable, parse_rate, tbf_args, tool

IFACE = "eth0"  # every host's interface toward the switch, as on a real node


def add_launch_arguments(ap, hosts_help: str) -> None:
    """The benches' ``--hosts``, ``--per-host`` and ``--controller`` (``bench step``, ``bench
    accuracy``): ``--hosts`` > 1 runs the job on an :class:`EmulatedCluster`."""
    ap.add_argument("--hosts", type=int, default=1, help=hosts_help)
    ap.add_argument("--per-host", type=int, default=2, help="workers per host with --hosts (default 2)")
    ap.add_argument(
        "--controller",
        choices=["gloo", "mpi"],
        default="gloo",
        help="with --hosts: horovodrun --gloo (default) or --mpi (Open MPI: ranks on one host talk "
        "over shared memory, as on a real node; across hosts TCP over the shaped eth0)",
    )


def check_available() -> None:
    """Raise :class:`NamespaceUnavailable` unless an emulated cluster can be made here."""
    netns.check_available()
    missing = [t for t in ("sshd", "ssh", "ssh-keygen", "unshare") if tool(t) is None]
    if missing:
        raise NamespaceUnavailable(
            f"the emulated cluster needs {', '.join(missing)} (Debian: apt-get "
            "install openssh-server openssh-client)"
        )
    if (
        not Path("/sys/module/bridge").exists()
        and subprocess.run([tool("modprobe") or "modprobe", "bridge"], capture_output=True).returncode != 0
    ):
        raise NamespaceUnavailable("the emulated cluster needs the Linux bridge module (modprobe bridge)")


def inter_host_factor(pattern: str, hosts: int, per_host: int) -> float:
    """Inter-host bytes of one exchange, as a multiple of one worker's payload (``B`` bytes), for
    ``hosts`` x ``per_host`` ranks placed host by host (Horovod's ``-H`` order) over Gloo:

    * ``allreduce`` (Gloo ring): ``hosts`` of the ``N`` ring links cross hosts, each carrying
      ``2 (N-1)/N B``;
    * ``allgather`` (Gloo ring): ``hosts`` crossing links, each carrying ``(N-1) B``;
    * ``reduce_scatter`` (hvd_compress: an alltoall of ``B/N`` chunks, then a ring allgather of the
      re-encoded ``B/N`` chunk): Gloo's alltoall sends every chunk straight to its peer, so
      ``N (N - per_host)`` chunks cross, plus ``hosts (N-1) B/N``.

    Measured on the emulated cluster (2 x 2 ranks, 1 Gbit/s): fp32 1.00, onebit/QSGD
    (reduce_scatter) and TopK (allgather) within 3% of these, once the idle control-plane rate is
    subtracted (tests/test_cluster_mp.py).
    """
    n = hosts * per_host
    if hosts < 2:
        return 0.0
    if pattern == "allreduce":
        return hosts * 2.0 * (n - 1) / n
    if pattern == "allgather":
        return hosts * (n - 1.0)
    if pattern == "reduce_scatter":
        return (n - per_host) + hosts * (n - 1.0) / n
    raise ValueError(f"unknown exchange pattern {pattern!r}")


class EmulatedCluster:
    """``with EmulatedCluster(hosts=2, link="1gbit") as c: c.run("host1", [...])``.

    ``link``: each host's NIC rate (``"1gbit"``, ``"10gbit"``, ``"500mbit"``), shaped in both
    directions; ``None`` leaves the link unshaped. ``subnet``: the first three octets of the hosts'
    addresses (default derived from the pid, so concurrent clusters do not clash).
    """

    def __init__(
        self, hosts: int = 2, link: Optional[str] = "1gbit", subnet: Optional[str] = None, latency_ms: float = 200.0
    ):
        if hosts < 1:
            raise ValueError(f"hosts must be >= 1, got {hosts}")
        check_available()
        self.hosts = [f"host{i + 1}" for i in range(hosts)]
        self.link = link
        self.rate_bits = parse_rate(link) if link else None
        self.latency_ms = latency_ms
        tag = f"hvdc{os.getpid()}"
        self.switch = f"{tag}-sw"
        self.ns = {h: f"{tag}-{h}" for h in self.hosts}
        subnet = subnet or f"10.213.{os.getpid() % 250 + 1}"
        self.addr = {h: f"{subnet}.{i + 1}" for i, h in enumerate(self.hosts)}
        self.ip, self.tc = tool("ip"), tool("tc")
        self.dir: Optional[Path] = None
        self._sshd: Dict[str, subprocess.Popen] = {}
        self._up = False

    # -- commands inside a host ------------------------------------------------------------------
    def command(self, host: str, argv: List[str]) -> List[str]:
        """``argv`` to run inside ``host``'s namespace (its network, ``/etc/hosts`` and ssh config),
        in its own UTS namespace named ``host``: Gloo resolves ``gethostname()`` when it binds."""
        return [
            self.ip,
            "netns",
            "exec",
            self.ns[self._host(host)],
            tool("unshare"),
            "--uts",
            "sh",
            "-c",
            'hostname "$0" && exec "$@"',
            host,
        ] + [str(a) for a in argv]

    def run(self, host: str, argv: List[str], **kwargs) -> subprocess.CompletedProcess:
        """``subprocess.run`` inside ``host``; keyword arguments pass through (``timeout`` etc.)."""
        return subprocess.run(self.command(host, argv), **kwargs)

    def popen(self, host: str, argv: List[str], **kwargs) -> subprocess.Popen:
        return subprocess.Popen(self.command(host, argv), **kwargs)

    def env(self, base: Optional[dict] = None, **extra) -> dict:
        """An environment for launchers in the cluster: ``HOROVOD_GLOO_IFACE``/``GLOO_SOCKET_IFNAME``
        = eth0, ``NCCL_SOCKET_IFNAME`` too, plus ``extra``."""
        env = dict(os.environ if base is None else base)
        env.update({"HOROVOD_GLOO_IFACE": IFACE, "GLOO_SOCKET_IFNAME": IFACE, "NCCL_SOCKET_IFNAME": IFACE})
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def horovodrun_args(self, per_host: int, controller: str = "gloo") -> List[str]:
        """``-np N -H host1:P,host2:P --gloo --network-interface eth0`` for ``per_host`` ranks per
        host (``controller="mpi"``: ``--mpi``, Open MPI's mpirun starting the other hosts' ranks)."""
        if controller not in ("gloo", "mpi"):
            raise ValueError(f"controller must be 'gloo' or 'mpi', got {controller!r}")
        hosts = ",".join(f"{h}:{per_host}" for h in self.hosts)
        return ["-np", str(per_host * len(self.hosts)), "-H", hosts, f"--{controller}", "--network-interface", IFACE]

    # -- bytes on the inter-host link --------------------------------------------------------------
    def tx_bytes(self) -> Dict[str, int]:
        """Bytes each host has sent out of its ``eth0`` so far (kernel counters, all traffic)."""
        out = {}
        for h in self.hosts:
            info = json.loads(self._ip("-n", self.ns[h], "-s", "-j", "link", "show", "dev", IFACE))
            out[h] = int(info[0]["stats64"]["tx"]["bytes"])
        return out

    def inter_host_bytes(self) -> int:
        """Total bytes sent between hosts so far (each crosses exactly one host's ``eth0``)."""
        return sum(self.tx_bytes().values())

    # -- setup / teardown --------------------------------------------------------------------------
    def __enter__(self):
        netns.install_cleanup()
        netns.on_cleanup(self.close)
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def _host(self, host: str) -> str:
        if host not in self.ns:
            raise KeyError(f"unknown host {host!r}; this cluster has {self.hosts}")
        return host

    def _ip(self, *args: str) -> str:
        return self._sh(self.ip, *args)

    @staticmethod
    def _sh(*args: str) -> str:
        proc = subprocess.run(list(args), capture_output=True, text=True)
        if proc.returncode != 0:
            raise NamespaceUnavailable(f"{' '.join(args)} failed: {proc.stderr.strip()}")
        return proc.stdout

    def _create(self) -> None:
        self._up = True
        self.dir = Path(tempfile.mkdtemp(prefix="hvdc-cluster-"))
        for name in [self.switch] + list(self.ns.values()):
            netns.delete(name)
            try:
                self._ip("netns", "add", name)
            except NamespaceUnavailable as exc:
                raise NamespaceUnavailable(
                    f"cannot create a network namespace ({exc}); the emulated "
                    "cluster needs CAP_SYS_ADMIN and CAP_NET_ADMIN"
                )
            netns.LIVE.append(name)
            self._ip("-n", name, "link", "set", "lo", "up")
        self._ip("-n", self.switch, "link", "add", "br0", "type", "bridge")
        self._ip("-n", self.switch, "link", "set", "br0", "up")
        for h, ns in self.ns.items():
            port = f"v{h}"
            self._ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", IFACE, "netns", ns)
            self._ip("-n", self.switch, "link", "set", port, "master", "br0", "up")
            self._ip("-n", ns, "addr", "add", f"{self.addr[h]}/24", "dev", IFACE)
            self._ip("-n", ns, "link", "set", IFACE, "up")
            if self.rate_bits:
                for where, dev in ((ns, IFACE), (self.switch, port)):  # host -> switch and switch -> host
                    self._sh(
                        self.tc,
                        "-n",
                        where,
                        "qdisc",
                        "add",
                        "dev",
                        dev,
                        "root",
                        *tbf_args(self.rate_bits, self.latency_ms),
                    )
        self._write_etc()
        self._start_sshd()

    def _write_etc(self) -> None:
        keygen = tool("ssh-keygen")
        key = self.dir / "id_ed25519"
        self._sh(keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(key))
        (self.dir / "authorized_keys").write_text((self.dir / "id_ed25519.pub").read_text())
        hosts = "127.0.0.1 localhost\n" + "".join(f"{a} {h}\n" for h, a in self.addr.items())
        for h, ns in self.ns.items():
            etc = Path("/etc/netns") / ns
            (etc / "ssh").mkdir(parents=True, exist_ok=True)
            (etc / "hosts").write_text(hosts)
            (etc / "ssh" / "ssh_config").write_text(
                f"Host *\n  IdentityFile {key}\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
                "  LogLevel ERROR\n  BatchMode yes\n  ConnectTimeout 10\n"
            )
            if Path("/etc/ssh/moduli").exists():
                shutil.copy("/etc/ssh/moduli", etc / "ssh" / "moduli")
            self._sh(keygen, "-q", "-t", "ed25519", "-N", "", "-f", str(self.dir / f"host_key.{h}"))
            (self.dir / f"sshd_config.{h}").write_text(
                f"Port 22\nListenAddress {self.addr[h]}\nHostKey {self.dir}/host_key.{h}\n"
                f"PidFile {self.dir}/sshd.{h}.pid\nAuthorizedKeysFile {self.dir}/authorized_keys\n"
                "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nUseDNS no\n"
                "MaxStartups 100:30:200\nMaxSessions 100\nLogLevel ERROR\n"
            )

    def _start_sshd(self) -> None:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege-separation directory
        sshd = tool("sshd")
        for h in self.hosts:
            self._sshd[h] = self.popen(
                h,
                [sshd, "-D", "-e", "-f", str(self.dir / f"sshd_config.{h}")],
                stdout=subprocess.DEVNULL,
                stderr=open(self.dir / f"sshd.{h}.log", "w"),
            )
        deadline = time.monotonic() + 20
        for h in self.hosts:
            while True:
                probe = self.run(self.hosts[0], [tool("ssh"), h, "true"], capture_output=True, text=True)
                if probe.returncode == 0:
                    break
                if self._sshd[h].poll() is not None or time.monotonic() > deadline:
                    log = (self.dir / f"sshd.{h}.log").read_text()
                    raise NamespaceUnavailable(f"sshd in {h} did not accept ssh: {probe.stderr.strip()} {log}")
                time.sleep(0.2)

    def close(self) -> None:
        """Kill every process left in the hosts, delete the namespaces and their files. Idempotent."""
        if not self._up:
            return
        self._up = False
        for ns in list(self.ns.values()) + [self.switch]:
            self._kill_namespace(ns)
            netns.delete(ns)
            shutil.rmtree(Path("/etc/netns") / ns, ignore_errors=True)
        for p in self._sshd.values():
            if p.poll() is None:
                p.kill()
            p.wait()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _kill_namespace(self, ns: str) -> None:
        """SIGKILL the processes this cluster started in ``ns`` (``ip netns pids``), so no sshd,
        worker or Ray daemon outlives it."""
        for _ in range(3):
            out = subprocess.run([self.ip, "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            pids = [int(p) for p in out if p.isdigit() and int(p) != os.getpid()]
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.2)
