"""Spec: training across two emulated hosts, launched by ``horovodrun -H`` over ssh.

An ``EmulatedCluster`` (hvd_compress/bench/cluster.py) gives each host its own network namespace,
sshd and address, with a 1 Gbit/s token-bucket link between them. One ``horovodrun -np 4 -H
host1:2,host2:2 --gloo`` job, started inside host1, trains the demo MLP with fp32 and three codecs;
we check, per codec:
* the ranks really are 2 per host (local_rank / cross_rank / hostname as on a cluster);
* accuracy within 1 point of fp32 and replicas bit-identical;
* the bytes that left the hosts' eth0 (kernel counters on the inter-host veths) within 10% of the
  nominal inter-host bytes of the codec's exchange pattern (``inter_host_factor``), after
  subtracting Horovod's idle control-plane traffic measured in the same job. Bytes are counted on
  a wider MLP (hidden 1024, 2 epochs), where payloads outweigh per-message overhead.

Needs root, ``ip netns``, tc and openssh-server; skipped with the reason otherwise.
"""
import os
import subprocess

import pytest

from hvd_compress.bench.cluster import EmulatedCluster, check_available, inter_host_factor
from hvd_compress.bench.netns import NamespaceUnavailable
from launch import cluster_horovodrun


def _why_unavailable():
    try:
        check_available()
    except NamespaceUnavailable as exc:
        return str(exc)
    return None


pytestmark = pytest.mark.skipif(_why_unavailable() is not None, reason=f"no emulated cluster: {_why_unavailable()}")

CODECS = ["fp32", "onebit", "qsgd:bits=4", "topk:ratio=0.05"]
# Horovod's background loop cycles every HOROVOD_CYCLE_TIME ms even when idle; 10 ms (default 1)
# keeps its control traffic well below the compressed codecs' few hundred KB per step
CYCLE_MS = "10"


@pytest.fixture(scope="module")
def job():
    with EmulatedCluster(hosts=2, link="1gbit") as cluster:
        os.environ["HOROVOD_CYCLE_TIME"] = CYCLE_MS
        try:
            results = cluster_horovodrun(cluster, 2, "tests/mp/cluster_train.py", "--codecs", ",".join(CODECS),
                                         "--epochs", "16", "--bytes-hidden", "1024", "--bytes-epochs", "2",
                                         timeout=600)
        finally:
            del os.environ["HOROVOD_CYCLE_TIME"]
    return results


def test_setup_and_teardown_leave_nothing_behind():
    with EmulatedCluster(hosts=2, link="500mbit") as c:
        names = list(c.ns.values()) + [c.switch]
        qdisc = subprocess.run(c.command("host1", ["tc", "qdisc", "show", "dev", "eth0"]),
                               capture_output=True, text=True).stdout
        assert "tbf" in qdisc and "500Mbit" in qdisc, qdisc
        ssh = c.run("host1", ["ssh", "host2", "hostname"], capture_output=True, text=True, timeout=30)
        assert ssh.stdout.strip() == "host2", ssh.stderr
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not any(n in listed for n in names), listed
    assert not any(os.path.exists(f"/etc/netns/{n}") for n in names)


def test_bad_arguments_are_clear_errors():
    with pytest.raises(ValueError, match="hosts must be >= 1"):
        EmulatedCluster(hosts=0)
    with pytest.raises(ValueError, match="bad link rate"):
        EmulatedCluster(hosts=2, link="fast")


def test_horovodrun_places_two_ranks_on_each_host(job):
    layout = sorted((r["rank"], r["hostname"], r["local_rank"], r["cross_rank"]) for r in job.values())
    assert layout == [(0, "host1", 0, 0), (1, "host1", 1, 0), (2, "host2", 0, 1), (3, "host2", 1, 1)]


def test_codecs_train_within_1_point_of_fp32_with_identical_replicas(job):
    rows = {r["codec"]: r for r in job[0]["rows"]}
    for rank, res in job.items():  # identical replicas evaluate identically on every rank
        assert [r["accuracy"] for r in res["rows"]] == [r["accuracy"] for r in job[0]["rows"]], rank
    base = rows["fp32"]["accuracy"]
    assert base > 0.9, f"fp32 baseline did not train: {base}"
    for name, row in rows.items():
        assert row["replicas_identical"], f"{name}: replicas differ"
        assert row["accuracy"] >= base - 0.01 - 1e-9, f"{name}: {row['accuracy']:.4f} vs fp32 {base:.4f}"


def _nominal_inter_host_bytes(row):
    """Payload bytes per step x the pattern's inter-host factor, over the counted steps."""
    steps = row["steps"]
    if row["codec"] == "fp32":
        per_step = inter_host_factor("allreduce", 2, 2) * row["bytes_per_step"] / (2 * 3 / 4)
    else:
        (pattern,) = row["patterns"]
        per_step = sum(inter_host_factor("allreduce" if describe == "uncompressed" else pattern, 2, 2)
                       * stats["payload_bytes"] / steps for describe, stats in row["wire_stats"].items())
    return per_step * row["counted_steps"]


def test_inter_host_bytes_on_the_veths_within_10_percent_of_nominal(job):
    leaders = [r for r in job.values() if r["local_rank"] == 0]  # one counter reader per host
    idle_rate = sum(r["idle_tx_bytes_per_s"] for r in leaders)
    for i, row in enumerate(job[0]["byte_rows"]):
        measured = sum(r["byte_rows"][i]["host_tx_bytes"] - r["idle_tx_bytes_per_s"] * r["byte_rows"][i]["counted_seconds"]
                       for r in leaders)
        nominal = _nominal_inter_host_bytes(row)
        assert measured == pytest.approx(nominal, rel=0.10), (
            f"{row['codec']}: measured {measured / 1e6:.2f} MB vs nominal {nominal / 1e6:.2f} MB "
            f"(idle control plane {idle_rate / 1e3:.0f} KB/s subtracted)")
