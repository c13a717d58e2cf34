"""The replication write cache: while a target is unreachable, new data is
kept in memory, then in the write log (file cache); once both are full the
ranges are resynced from the volume. Whatever path a write took, the replica
ends equal to the primary, and the DR timeline marks the resync window."""

import os
import time

from test_replication import SIZE, read_dev, replica_image, sites, start, wait_caught_up  # noqa: F401


def test_target_outage_longer_than_both_caches_ends_in_a_resync(sites):
    net, src, dr, _ = sites
    start(dr, server=True)
    start(src)
    src.cli("volume", "create", "vol", "--backing", str(src.root / "vol.img"), "--size", str(SIZE),
            "--cache-size", "1M", "--file-cache-size", "4M")
    dev = src.cli("volume", "up", "vol").stdout.strip()
    src.cli("volume", "replicate", "vol", "--to", f"{net.dr_ip}:7700", "--mode", "async")
    wait_caught_up(src)

    net.cut()
    # 16 MiB of new data while the target is away: 1 MiB fits the ring, about
    # 4 MiB the file cache, the rest only in the volume.
    fd = os.open(dev, os.O_RDWR)
    try:
        for i in range(64):
            os.pwrite(fd, os.urandom(256 << 10), (i * 3 % 256) * (256 << 10))
        os.fsync(fd)
    finally:
        os.close(fd)
    st = src.cli("volume", "status", "vol", json_out=True)
    assert st["pending_bytes"] <= 1 << 20, st
    assert st["spilled_records"] > 0, st
    assert st["unbuffered_records"] > 0, st

    net.restore()
    src.cli("bookmark", "add", "vol", "after-outage")
    wait_caught_up(src, timeout=90)
    assert replica_image(dr) == read_dev(dev), "replica differs from the primary"
    assert replica_image(dr, "after-outage") == read_dev(dev)
    kinds = [e["kind"] for e in src.cli("events", "--volume", "vol", json_out=True)]
    assert "resync_started" in kinds and "resync_done" in kinds, kinds


def test_standby_agent_is_a_replication_target(sites):
    """A second agent with --listen keeps the replica (pre-configured standby):
    it lists it, serves views of it, and still runs its own volumes."""
    net, src, standby, _ = sites
    start(standby)                     # an agent, not a server
    start(src)
    assert standby.cli("volume", "status", json_out=True) == []
    src.cli("volume", "create", "vol", "--backing", str(src.root / "vol.img"), "--size", str(SIZE))
    dev = src.cli("volume", "up", "vol").stdout.strip()
    with open(dev, "r+b", buffering=0) as f:
        f.write(os.urandom(4 << 20))
        os.fsync(f.fileno())
    src.cli("volume", "replicate", "vol", "--to", f"{net.dr_ip}:7700", "--mode", "sync")
    wait_caught_up(src)
    src.cli("bookmark", "add", "vol", "b1")
    wait_caught_up(src)
    reps = standby.cli("replica", "list", json_out=True)
    assert [r["name"] for r in reps] == ["prod1.vol"], reps
    assert replica_image(standby, "b1") == read_dev(dev)
    # The standby's own volumes work next to the replica.
    standby.cli("volume", "create", "own", "--backing", str(standby.root / "own.img"), "--size", "16M")
    own = standby.cli("volume", "up", "own").stdout.strip()
    assert own.startswith("/dev/loop")
    r = standby.cli("volume", "up", "prod1.vol", check=False)
    assert r.returncode == 1 and "is a replica" in r.stderr


def test_forwarding_a_replica_onward_synchronously_is_refused_clearly(sites):
    # Cascade hops are asynchronous only (test_replication_cascade.py covers the rest).
    net, src, dr, _ = sites
    start(dr, server=True)
    start(src)
    src.cli("volume", "create", "vol", "--backing", str(src.root / "vol.img"), "--size", str(SIZE))
    src.cli("volume", "replicate", "vol", "--to", f"{net.dr_ip}:7700")
    wait_caught_up(src)
    for mode in ("sync", "adaptive"):
        r = dr.cli("volume", "replicate", "prod1.vol", "--to", "127.0.0.1:7701", "--mode", mode, check=False)
        assert r.returncode != 0 and "is a replica" in r.stderr and "cascade" in r.stderr, r.stderr
        assert "asynchronous" in r.stderr, r.stderr
