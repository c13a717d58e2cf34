"""Sync quorum: one volume replicating synchronously to three DR servers,
each in its own network namespace behind its own veth link, with quorum 2.
One link cut: writes go on at sync speed, and after a kill -9 of the primary
both remaining replicas hold every acknowledged write. Two links cut: writes
are held until the second target is declared gone, then continue on the one
left (event quorum_lost). Links back: every replica equals the primary."""

import os
import random
import subprocess
import threading
import time

import pytest

from conftest import BIN, Agent, run

SIZE = 64 << 20
PEER_TIMEOUT = 2  # seconds; a cut target holds writers at most this long


class Star:
    """Namespace <src> linked to three DR namespaces, one veth pair each, so
    one link can be cut without touching the others."""

    def __init__(self, n=3):
        pid = os.getpid()
        base = (pid % 60) * 4
        self.src = f"ctqs{pid}"
        self.drs = [f"ctqd{i}{pid}" for i in range(n)]
        self.src_ips = [f"10.78.{base + i}.1" for i in range(n)]
        self.dr_ips = [f"10.78.{base + i}.2" for i in range(n)]
        self.veth_src = [f"vq{pid % 100000}s{i}" for i in range(n)]
        self.veth_dr = [f"vq{pid % 100000}d{i}" for i in range(n)]

    def up(self):
        run(["ip", "netns", "add", self.src])
        run(["ip", "-n", self.src, "link", "set", "lo", "up"])
        for i, dr in enumerate(self.drs):
            run(["ip", "netns", "add", dr])
            run(["ip", "link", "add", self.veth_src[i], "type", "veth", "peer", "name", self.veth_dr[i]])
            run(["ip", "link", "set", self.veth_src[i], "netns", self.src])
            run(["ip", "link", "set", self.veth_dr[i], "netns", dr])
            for ns, dev, ip in ((self.src, self.veth_src[i], self.src_ips[i]), (dr, self.veth_dr[i], self.dr_ips[i])):
                run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev])
                run(["ip", "-n", ns, "link", "set", dev, "up"])
            run(["ip", "-n", dr, "link", "set", "lo", "up"])
        return self

    def cut(self, i):
        run(["ip", "-n", self.src, "link", "set", self.veth_src[i], "down"])

    def restore(self, i):
        run(["ip", "-n", self.src, "link", "set", self.veth_src[i], "up"])

    def down(self):
        for ns in [self.src, *self.drs]:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def star(tmp_path):
    net = Star()
    pki = tmp_path / "pki"
    agents = []
    try:
        net.up()
        run([BIN, "pki", "init", "--dir", str(pki)])
        for name in ("prod1", "dr0", "dr1", "dr2"):
            run([BIN, "pki", "issue", name, "--dir", str(pki)])
        src = Agent(tmp_path / "src")
        src.root.mkdir()
        src.netns = net.src
        src.args = ["--pki", str(pki), "--name", "prod1"]
        agents.append(src)
        drs = []
        for i in range(3):
            dr = Agent(tmp_path / f"dr{i}")
            dr.root.mkdir()
            dr.netns = net.drs[i]
            dr.args = ["--pki", str(pki), "--name", f"dr{i}", "--listen", f"{net.dr_ips[i]}:7700"]
            agents.append(dr)
            drs.append(dr)
        yield net, src, drs
    finally:
        for a in agents:
            a.cleanup()
        net.down()


def start(a, server=False):
    return a.start(a.args, netns=a.netns, server=server)


class Writer:
    """64 KiB writes with fsync on a thread; records each acknowledged write
    with its latency, and the one not yet acknowledged."""

    def __init__(self, dev, seed):
        self.dev, self.rng = dev, random.Random(seed)
        self.acked, self.inflight = [], []
        self.stop_ev = threading.Event()
        self.t = threading.Thread(target=self.loop)

    def loop(self):
        fd = os.open(self.dev, os.O_RDWR)
        try:
            while not self.stop_ev.is_set():
                off = self.rng.randrange(0, SIZE // 65536) * 65536
                data = self.rng.randbytes(65536)
                self.inflight[:] = [(off, data)]
                t0 = time.monotonic()
                try:
                    os.pwrite(fd, data, off)
                    os.fsync(fd)
                except OSError:
                    return
                t1 = time.monotonic()
                self.acked.append((off, data, t1, t1 - t0))
                self.inflight[:] = []
                time.sleep(0.002)
        finally:
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self):
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        self.t.join(timeout=120)

    def since(self, t):
        return [a for a in self.acked if a[2] >= t]


def targets(src):
    return src.cli("volume", "targets", "vol", json_out=True)


def target(src, to):
    return next(t for t in targets(src) if t["address"] == to)


def caught_up(src, to, timeout=90):
    deadline = time.time() + timeout
    while True:
        t = target(src, to)
        if t["state"] == "streaming" and t["acked_seq"] == t["last_seq"] and not t["resyncing"]:
            return t
        assert time.time() < deadline, f"{to} did not catch up: {t}"
        time.sleep(0.2)


def read_dev(dev):
    with open(dev, "rb", buffering=0) as f:
        return f.read(SIZE)


def image(server):
    dev = server.cli("view", "open", "prod1.vol", "--at", "latest").stdout.strip()
    try:
        return read_dev(dev)
    finally:
        # Detaching a loop device just read can briefly fail as busy (a
        # transient holder, seen in other replication tests too): retry.
        for _ in range(50):
            r = server.cli("view", "close", dev, check=False)
            if r.returncode == 0:
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"view close {dev} failed: {r.stdout}{r.stderr}")


def event_kinds(src):
    ev = src.cli("events", "--volume", "vol", json_out=True)
    return [e["kind"] for e in (ev["events"] if isinstance(ev, dict) else ev)]


def wait_for(pred, what, timeout=30):
    deadline = time.time() + timeout
    while not pred():
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def three_sync_targets(net, src, drs):
    for dr in drs:
        start(dr, server=True)
    start(src)
    src.cli("volume", "create", "vol", "--backing", str(src.root / "vol.img"), "--size", str(SIZE))
    dev = src.cli("volume", "up", "vol").stdout.strip()
    tos = [f"{ip}:7700" for ip in net.dr_ips]
    src.cli("volume", "replicate", "vol", "--quorum", "2")
    for to in tos:
        src.cli("volume", "replicate", "vol", "--to", to, "--mode", "sync", "--peer-timeout", str(PEER_TIMEOUT))
    for to in tos:
        caught_up(src, to)
    q = targets(src)[0]["quorum"]
    assert q == {"required": 2, "all": False, "sync_targets": 3, "available": 3, "degraded": False}, q
    # While the targets were being added and connected there were fewer than
    # two: reported, and restored once they were there.
    kinds = event_kinds(src)
    assert kinds.count("quorum_lost") == kinds.count("quorum_restored"), kinds
    return dev, tos, len(kinds)


def assert_holds_acked(img, acked, inflight, where):
    final = {}
    for off, data, *_ in acked:
        final[off] = data
    for off, data in final.items():
        got = img[off:off + len(data)]
        if got != data and inflight and inflight[0][0] == off:
            # The write the application never saw acknowledged may be there instead.
            assert got == inflight[0][1], f"{where}: block at {off} holds neither the acknowledged nor the in-flight write"
            continue
        assert got == data, f"{where}: acknowledged write at {off} missing"


def test_quorum_of_two_keeps_rpo0_with_one_target_cut(star):
    net, src, drs = star
    dev, tos, n_events = three_sync_targets(net, src, drs)
    with Writer(dev, 11) as w:
        time.sleep(2)
        t_cut = time.monotonic()
        base = len(w.since(t_cut - 2)) / 2
        net.cut(2)  # dr2's link goes down under load
        time.sleep(PEER_TIMEOUT + 2)
        during = w.since(t_cut)
        rate = len(during) / (time.monotonic() - t_cut)
        worst = max(a[3] for a in during)
        print(f"one target cut: {rate:.1f} writes/s (before {base:.1f}), slowest {worst * 1000:.0f} ms")
        # The quorum is met by dr0 and dr1: nobody waits for the dead link.
        assert rate > 0.5 * base, f"{rate:.1f} writes/s with one target cut, {base:.1f} before"
        assert worst < PEER_TIMEOUT / 2, f"a write took {worst:.2f}s: it waited for the cut target"
        t2 = target(src, tos[2])
        assert t2["state"] != "streaming", t2
        assert not targets(src)[0]["quorum"]["degraded"]
        assert "quorum_lost" not in event_kinds(src)[n_events:]
        src.kill9()  # the primary dies right after acknowledged writes
        acked, inflight = list(w.acked), list(w.inflight)
    assert len(acked) > 50
    # Both replicas that made the quorum hold every acknowledged write.
    for i in (0, 1):
        assert_holds_acked(image(drs[i]), acked, inflight, f"dr{i}")

    net.restore(2)
    start(src)
    dev = src.cli("volume", "status", "vol", json_out=True)["device"]
    assert targets(src)[0]["quorum"]["required"] == 2, "the quorum did not survive the restart"
    src.cli("bookmark", "add", "vol", "quiesced")
    for to in tos:
        caught_up(src, to)
    primary = read_dev(dev)
    known = []
    for i, dr in enumerate(drs):
        img = image(dr)
        if img == primary:
            continue
        # Known primary-side issue (not in replication): the write in flight
        # when the primary was killed can reach the targets (shipped from the
        # write log and ring) but not the primary's own mirror, and recovery
        # does not resend it. Anything else differing is a failure here.
        blocks = {o - o % 65536 for o in range(0, SIZE, 4096) if img[o:o + 4096] != primary[o:o + 4096]}
        assert inflight and blocks == {inflight[0][0]}, \
            f"replica at dr{i} differs from the primary in blocks {sorted(blocks)}; in flight: {inflight[:1] and inflight[0][0]}"
        known.append(i)
    if known:
        # Online verify repairs it, then every replica equals the primary.
        for i in known:
            src.cli("volume", "verify", "vol", "--to", tos[i], "--repair")
            caught_up(src, tos[i])
        primary = read_dev(dev)
        for i, dr in enumerate(drs):
            assert image(dr) == primary, f"replica at dr{i} differs from the primary after verify --repair"
        pytest.xfail(f"replicas {known} held the write in flight at the primary's kill -9, the primary did not "
                     "(primary crash recovery does not resend it); repaired by verify --repair")


def test_losing_the_quorum_degrades_with_an_event_and_converges(star):
    net, src, drs = star
    dev, tos, n_events = three_sync_targets(net, src, drs)
    with Writer(dev, 12) as w:
        time.sleep(1)
        net.cut(2)
        time.sleep(PEER_TIMEOUT + 1)
        assert "quorum_lost" not in event_kinds(src)[n_events:]
        t_cut = time.monotonic()
        net.cut(1)  # now only dr0 is reachable: fewer than the quorum
        wait_for(lambda: "quorum_lost" in event_kinds(src)[n_events:], "event quorum_lost", PEER_TIMEOUT + 10)
        q = targets(src)[0]["quorum"]
        assert q["degraded"] and q["available"] == 1, q
        time.sleep(2)
        during = w.since(t_cut)
        # Held at most until dr1 was declared gone, then going on with dr0.
        worst = max(a[3] for a in during)
        print(f"quorum lost: slowest write {worst:.2f} s, {len(during)} writes since the second cut")
        assert worst < PEER_TIMEOUT + 3, f"a write was held {worst:.2f}s"
        late = w.since(time.monotonic() - 1.5)
        assert len(late) > 10, f"writes did not go on after the quorum was lost: {len(late)}"
        net.restore(1)
        net.restore(2)
        wait_for(lambda: "quorum_restored" in event_kinds(src)[n_events:], "event quorum_restored", 60)
        time.sleep(1)
    assert len(w.acked) > 50
    src.cli("bookmark", "add", "vol", "quiesced")
    for to in tos:
        caught_up(src, to)
    assert not targets(src)[0]["quorum"]["degraded"]
    primary = read_dev(dev)
    for i, dr in enumerate(drs):
        assert image(dr) == primary, f"replica at dr{i} differs from the primary"
    kinds = event_kinds(src)[n_events:]
    assert kinds.index("quorum_lost") < kinds.index("quorum_restored"), kinds
