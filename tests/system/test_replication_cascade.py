"""Cascade: primary agent -> server A -> server B, each in its own network
namespace (a line of two veth links). A forwards its replica onward: B is
seeded from A's replica at a point (no new seqs), then gets A's stream with
the primary's seqs. Under load, kill -9 of A: once it is back, B catches up
again from its acknowledged seq. B's replica then equals the primary byte for
byte, and a point-in-time view at B matches the primary's at the same point."""

import os
import subprocess
import threading
import time

import pytest

from conftest import BIN, Agent, run
from test_replication import SIZE, read_dev, write_loop

REPLICA_A = "prod1.vol"
REPLICA_B = "drA.prod1-vol"  # named after the host that forwards it and the source volume


class Line:
    """Namespaces src -- a -- b: two veth pairs, A routes nothing (each link
    is its own /24 and A talks to both)."""

    def __init__(self):
        pid = os.getpid()
        n = (pid % 60) * 2 + 100
        self.src, self.a, self.b = f"ctcs{pid}", f"ctca{pid}", f"ctcb{pid}"
        self.src_ip, self.a_ip = f"10.79.{n}.1", f"10.79.{n}.2"
        self.a2_ip, self.b_ip = f"10.79.{n + 1}.1", f"10.79.{n + 1}.2"
        tag = pid % 100000
        self.links = [(f"vc{tag}s", f"vc{tag}a", self.src, self.a, self.src_ip, self.a_ip),
                      (f"vc{tag}A", f"vc{tag}b", self.a, self.b, self.a2_ip, self.b_ip)]

    def up(self):
        for ns in (self.src, self.a, self.b):
            run(["ip", "netns", "add", ns])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        for v1, v2, ns1, ns2, ip1, ip2 in self.links:
            run(["ip", "link", "add", v1, "type", "veth", "peer", "name", v2])
            run(["ip", "link", "set", v1, "netns", ns1])
            run(["ip", "link", "set", v2, "netns", ns2])
            for ns, dev, ip in ((ns1, v1, ip1), (ns2, v2, ip2)):
                run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev])
                run(["ip", "-n", ns, "link", "set", dev, "up"])
        return self

    def down(self):
        for ns in (self.src, self.a, self.b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def line(tmp_path):
    net = Line()
    pki = tmp_path / "pki"
    hosts = {}
    try:
        net.up()
        run([BIN, "pki", "init", "--dir", str(pki)])
        for name in ("prod1", "drA", "drB"):
            run([BIN, "pki", "issue", name, "--dir", str(pki)])
        for key, name, ns, listen in (("src", "prod1", net.src, None), ("a", "drA", net.a, f"{net.a_ip}:7700"),
                                      ("b", "drB", net.b, f"{net.b_ip}:7700")):
            h = Agent(tmp_path / key)
            h.root.mkdir()
            h.netns = ns
            h.args = ["--pki", str(pki), "--name", name] + (["--listen", listen] if listen else [])
            h.server = listen is not None
            hosts[key] = h
        yield net, hosts["src"], hosts["a"], hosts["b"]
    finally:
        for h in hosts.values():
            h.cleanup()
        net.down()


def start(h):
    return h.start(h.args, netns=h.netns, server=h.server)


def first_target(host, volume):
    return host.cli("volume", "targets", volume, json_out=True)[0]


def caught_up(host, volume, want_seq=None, timeout=90):
    deadline = time.time() + timeout
    while True:
        t = first_target(host, volume)
        if (t["state"] == "streaming" and t["acked_seq"] == t["last_seq"] and not t["resyncing"]
                and (want_seq is None or t["acked_seq"] >= want_seq)):
            return t
        assert time.time() < deadline, f"{volume} on {host.root.name}: target did not catch up: {t}"
        time.sleep(0.2)


def image(host, name, at="latest"):
    dev = host.cli("view", "open", name, "--at", at).stdout.strip()
    try:
        return read_dev(dev)
    finally:
        host.cli("view", "close", dev)


def test_cascade_seeds_forwards_and_survives_a_kill_of_the_middle(line):
    net, src, a, b = line
    start(b)
    start(a)
    start(src)
    src.cli("volume", "create", "vol", "--backing", str(src.root / "vol.img"), "--size", str(SIZE))
    dev = src.cli("volume", "up", "vol").stdout.strip()
    with open(dev, "r+b", buffering=0) as f:  # data that the seed must carry
        f.write(os.urandom(8 << 20))
        os.fsync(f.fileno())
    src.cli("volume", "replicate", "vol", "--to", f"{net.a_ip}:7700")
    caught_up(src, "vol")

    # Only asynchronous forwarding; the refusal says why.
    r = a.cli("volume", "replicate", REPLICA_A, "--to", f"{net.b_ip}:7700", "--mode", "sync", check=False)
    assert r.returncode != 0 and "asynchronous" in (r.stdout + r.stderr)
    a.cli("volume", "replicate", REPLICA_A, "--to", f"{net.b_ip}:7700")
    caught_up(a, REPLICA_A)
    kinds = [e["kind"] for e in b.cli("events", "--volume", REPLICA_B, json_out=True)]
    assert "seed_done" in kinds, kinds  # seeded from A's replica, not resynced

    stop = threading.Event()
    acked = []
    w = threading.Thread(target=write_loop, args=(dev, stop, acked, 7))
    w.start()
    try:
        time.sleep(2)
        mid = src.cli("bookmark", "add", "vol", "mid-load", json_out=True)
        time.sleep(1)
        a.kill9()  # the middle server dies under load
        time.sleep(2)
        start(a)
        time.sleep(3)
        b.kill9()  # then the last one
        time.sleep(1)
        start(b)
        time.sleep(2)
    finally:
        stop.set()
        w.join()
    assert len(acked) > 50, "the application barely wrote"
    src.cli("bookmark", "add", "vol", "quiesced")
    t = caught_up(src, "vol")
    caught_up(a, REPLICA_A, want_seq=t["last_seq"])
    primary = read_dev(dev)
    assert image(a, REPLICA_A) == primary, "replica at A differs from the primary"
    assert image(b, REPLICA_B) == primary, "replica at B differs from the primary"

    # The same point in time on the primary and two hops away.
    seq = mid["point"]["seq"] if isinstance(mid, dict) and "point" in mid else None
    at = f"seq:{seq}" if seq else "mid-load"
    assert image(b, REPLICA_B, at) == image(src, "vol", at), f"view at {at} differs between B and the primary"
    assert image(b, REPLICA_B, "quiesced") == primary

    reps = b.cli("replica", "list", json_out=True)
    assert any(r.get("name") == REPLICA_B for r in reps), reps
    # Both resumed from B's acknowledged seq after the kills (event logs start
    # again at each restart): no second seed.
    for host, name in ((a, REPLICA_A), (b, REPLICA_B)):
        kinds = [e["kind"] for e in host.cli("events", "--volume", name, json_out=True)]
        assert "seed_started" not in kinds, (name, kinds)

    # A replica that forwards cannot be rolled back (it would take the source's seqs).
    src.cli("volume", "unreplicate", "vol", "--to", f"{net.a_ip}:7700")
    deadline = time.time() + 20
    while True:
        r = a.cli("volume", "rollback", REPLICA_A, "--to", "mid-load", check=False)
        if "forwards" in r.stderr or time.time() > deadline:
            break
        time.sleep(0.5)  # until A notices the source is gone
    assert r.returncode != 0 and "forwards to other sites" in r.stderr, r.stderr


def test_a_seed_cut_short_starts_again(line):
    net, src, a, b = line
    start(b)
    start(a)
    start(src)
    src.cli("volume", "create", "vol", "--backing", str(src.root / "vol.img"), "--size", str(SIZE))
    dev = src.cli("volume", "up", "vol").stdout.strip()
    with open(dev, "r+b", buffering=0) as f:
        f.write(os.urandom(12 << 20))
        os.fsync(f.fileno())
    src.cli("volume", "replicate", "vol", "--to", f"{net.a_ip}:7700")
    caught_up(src, "vol")
    # A slow link: the seed (12 MiB of data) takes about six seconds.
    a.cli("volume", "replicate", REPLICA_A, "--to", f"{net.b_ip}:7700", "--bandwidth", "2M")
    time.sleep(2)
    assert first_target(a, REPLICA_A)["resyncing"], "the seed should still be running"
    b.kill9()  # B dies mid-seed: its replica holds no seq, so it is seeded again
    with open(dev, "r+b", buffering=0) as f:  # and the primary moves on meanwhile
        f.seek(20 << 20)
        f.write(os.urandom(1 << 20))
        os.fsync(f.fileno())
    start(b)
    t = caught_up(src, "vol")
    caught_up(a, REPLICA_A, want_seq=t["last_seq"], timeout=120)
    primary = read_dev(dev)
    assert image(b, REPLICA_B) == primary, "replica at B differs after a second seed"
    kinds = [e["kind"] for e in a.cli("events", "--volume", REPLICA_A, json_out=True)]
    assert kinds.count("seed_started") == 2 and "seed_done" in kinds, kinds
