"""Heartbeats: a dead link is noticed within seconds (not after the TCP
timeout), the target shows `disconnected` with a reason, writes keep
flowing into the write log, and once the link is back the replica catches
up and equals the primary. lag_seconds is the RPO: the age of the oldest
write the target does not have, 0 when caught up."""

import threading
import time

from conftest import BIN, run  # noqa: F401
from test_replication import SIZE, read_dev, replica_image, sites, start, wait_caught_up, write_loop  # noqa: F401


def targets(src):
    return src.cli("volume", "targets", "vol", json_out=True)[0]


def test_cut_link_is_noticed_within_seconds_and_the_replica_catches_up(sites):
    net, src, dr, _ = sites
    to = f"{net.dr_ip}:7700"
    start(dr, server=True)
    start(src)
    src.cli("volume", "create", "vol", "--backing", str(src.root / "vol.img"), "--size", str(SIZE))
    dev = src.cli("volume", "up", "vol").stdout.strip()
    src.cli("volume", "replicate", "vol", "--to", to)
    t = wait_caught_up(src)
    assert t["peer_timeout_ms"] == 5000 and t["lag_seconds"] == 0, t

    time.sleep(3)  # idle: heartbeats alone keep the connection up
    assert targets(src)["state"] == "streaming"

    stop = threading.Event()
    acked = []
    w = threading.Thread(target=write_loop, args=(dev, stop, acked, 3))
    w.start()
    try:
        time.sleep(1)
        net.cut()
        cut_at = time.time()
        seen = None
        while time.time() - cut_at < 15:
            t = targets(src)
            if t["state"] == "disconnected":
                seen = t
                break
            time.sleep(0.1)
        noticed = time.time() - cut_at
        assert seen is not None, f"still {t['state']} 15 s after the cut: {t}"
        assert noticed <= 10, noticed
        assert seen["last_error"], seen
        print(f"link cut noticed after {noticed:.1f} s: {seen['last_error']}")
        time.sleep(2)
        t = targets(src)
        assert t["state"] == "disconnected" and t["last_seq"] > t["acked_seq"], t
        # The RPO grows with the outage: the oldest unacknowledged write is older than the cut.
        assert t["lag_seconds"] >= time.time() - cut_at - 1.5, t
        net.restore()
        time.sleep(2)
    finally:
        net.restore()
        stop.set()
        w.join()
    t = wait_caught_up(src, timeout=60)
    assert t["lag_seconds"] == 0, t
    assert len(acked) > 50
    assert replica_image(dr) == read_dev(dev), "replica differs from the primary after the outage"


def test_peer_timeout_is_configurable(sites):
    net, src, dr, _ = sites
    to = f"{net.dr_ip}:7700"
    start(dr, server=True)
    start(src)
    src.cli("volume", "create", "vol", "--backing", str(src.root / "vol.img"), "--size", str(SIZE))
    src.cli("volume", "up", "vol")
    src.cli("volume", "replicate", "vol", "--to", to, "--peer-timeout", "2")
    wait_caught_up(src)
    assert targets(src)["peer_timeout_ms"] == 2000
    net.cut()
    cut_at = time.time()
    try:
        while targets(src)["state"] != "disconnected":
            assert time.time() - cut_at < 8, targets(src)
            time.sleep(0.1)
        assert time.time() - cut_at <= 4.5
    finally:
        net.restore()
    wait_caught_up(src, timeout=60)
    bad = src.cli("volume", "replicate", "vol", "--to", f"{net.dr_ip}:7701", "--peer-timeout", "x", check=False)
    assert bad.returncode != 0 and "peer-timeout" in (bad.stdout + bad.stderr)
