"""Fan-out: one volume replicating asynchronously to two DR servers. A dead
target must not hold the other one or the application; once it is back it
catches up, and both replicas equal the primary."""

import os
import threading
import time

from conftest import BIN, Agent, run
from test_replication import SIZE, read_dev, sites, start, write_loop  # noqa: F401


def target(src, to):
    return next(t for t in src.cli("volume", "targets", "vol", json_out=True) if t["address"] == to)


def caught_up(src, to, timeout=60):
    deadline = time.time() + timeout
    while True:
        t = target(src, to)
        if t["state"] == "streaming" and t["acked_seq"] == t["last_seq"] and not t["resyncing"]:
            return t
        assert time.time() < deadline, f"{to} did not catch up: {t}"
        time.sleep(0.2)


def image(server, name="prod1.vol"):
    dev = server.cli("view", "open", name, "--at", "latest").stdout.strip()
    try:
        return read_dev(dev)
    finally:
        server.cli("view", "close", dev)


def test_a_dead_target_does_not_hold_the_other_or_the_application(sites, tmp_path):
    net, src, dr, pki = sites
    run([BIN, "pki", "issue", "dr2", "--dir", str(pki)])
    dr2 = Agent(tmp_path / "dr2")
    dr2.root.mkdir()
    dr2.netns = net.dr
    dr2.args = ["--pki", str(pki), "--name", "dr2", "--listen", f"{net.dr_ip}:7701"]
    try:
        to1, to2 = f"{net.dr_ip}:7700", f"{net.dr_ip}:7701"
        start(dr, server=True)
        start(dr2, server=True)
        start(src)
        src.cli("volume", "create", "vol", "--backing", str(src.root / "vol.img"), "--size", str(SIZE))
        dev = src.cli("volume", "up", "vol").stdout.strip()
        src.cli("volume", "replicate", "vol", "--to", to1)
        src.cli("volume", "replicate", "vol", "--to", to2)
        caught_up(src, to1)
        caught_up(src, to2)

        stop = threading.Event()
        acked = []
        w = threading.Thread(target=write_loop, args=(dev, stop, acked, 3))
        w.start()
        try:
            time.sleep(1)
            before = len(acked)
            t0 = time.time()
            dr2.kill9()  # one DR site dies under load
            time.sleep(3)
            rate_dead = (len(acked) - before) / (time.time() - t0)
            assert rate_dead > 20, f"the application slowed to {rate_dead:.1f} writes/s with a dead target"
            # The live target keeps up while the dead one falls behind.
            t1, t2 = target(src, to1), target(src, to2)
            assert t2["state"] != "streaming" and t2["acked_seq"] < t1["last_seq"], t2
            assert t1["state"] == "streaming" and t1["last_seq"] - t1["acked_seq"] < 200, t1
            start(dr2, server=True)
            time.sleep(1)
        finally:
            stop.set()
            w.join()
        src.cli("bookmark", "add", "vol", "quiesced")
        caught_up(src, to1)
        caught_up(src, to2)
        primary = read_dev(dev)
        assert image(dr) == primary, "replica at dr1 differs"
        assert image(dr2) == primary, "replica at dr2 differs"
    finally:
        dr2.cleanup()
