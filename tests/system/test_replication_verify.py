"""Online verify of a replica while the volume is in use: corruption written
straight into the DR server's replica image (its mirror) is found range by
range, and --repair resends exactly those ranges through the stream until the
replica equals the primary again."""

import os
import threading
import time

from conftest import BIN, run  # noqa: F401
from test_replication import SIZE, read_dev, replica_image, sites, start, wait_caught_up  # noqa: F401

MIB = 1 << 20


def load(dev, stop, limit):
    """Writes below `limit` until stopped, so verify runs while the volume is in use."""
    import random
    rng = random.Random(7)
    fd = os.open(dev, os.O_RDWR)
    try:
        while not stop.is_set():
            os.pwrite(fd, rng.randbytes(65536), rng.randrange(0, limit // 65536) * 65536)
            os.fsync(fd)
            time.sleep(0.005)
    finally:
        os.close(fd)


def corrupt(path, offset, data):
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def test_verify_finds_and_repairs_a_corrupted_replica(sites):
    net, src, dr, _ = sites
    to = f"{net.dr_ip}:7700"
    start(dr, server=True)
    start(src)
    src.cli("volume", "create", "vol", "--backing", str(src.root / "vol.img"), "--size", str(SIZE))
    dev = src.cli("volume", "up", "vol").stdout.strip()
    with open(dev, "r+b", buffering=0) as f:
        f.write(os.urandom(16 * MIB))
        f.seek(40 * MIB)
        f.write(os.urandom(2 * MIB))
        os.fsync(f.fileno())
    src.cli("volume", "replicate", "vol", "--to", to)
    wait_caught_up(src)
    clean = src.cli("volume", "verify", "vol", "--to", to, json_out=True)
    assert clean["differing"] == [] and clean["ranges_checked"] == SIZE // MIB, clean

    stop = threading.Event()
    w = threading.Thread(target=load, args=(dev, stop, 16 * MIB))
    w.start()
    try:
        # Bit rot on the DR disk: in a data range and in a range that was zeros.
        img = dr.state / "replicas" / "prod1.vol.img"
        corrupt(img, 41 * MIB + 3 * 4096, b"\xde\xad" * 4096)
        corrupt(img, 57 * MIB + 100, os.urandom(100))
        found = src.cli("volume", "verify", "vol", "--to", to, json_out=True)
        assert [(d["offset"], d["length"]) for d in found["differing"]] == [(41 * MIB, MIB), (57 * MIB, MIB)], found
        assert found["repaired"] is False
        human = src.cli("volume", "verify", "vol", "--to", to).stdout
        assert "2 differing" in human and f"offset {41 * MIB}" in human, human

        fixed = src.cli("volume", "verify", "vol", "--to", to, "--repair", json_out=True)
        assert fixed["repaired"] is True and len(fixed["differing"]) == 2, fixed
        deadline = time.time() + 60
        while True:  # the resent ranges reach the replica through the live stream
            wait_caught_up(src)
            again = src.cli("volume", "verify", "vol", "--to", to, check=False, json_out=False)
            if again.returncode == 0 and "all equal" in again.stdout:
                break
            assert time.time() < deadline, again.stdout + again.stderr
            time.sleep(0.5)
    finally:
        stop.set()
        w.join()
    src.cli("bookmark", "add", "vol", "quiesced")
    wait_caught_up(src)
    assert replica_image(dr) == read_dev(dev), "replica differs from the primary after repair"
    events = src.cli("events", "--volume", "vol", json_out=True)
    kinds = {e["kind"] for e in (events["events"] if isinstance(events, dict) else events)}
    assert {"verify_ok", "verify_mismatch", "verify_repair"} <= kinds, kinds


def test_verify_refuses_an_unknown_target(sites):
    net, src, dr, _ = sites
    start(src)
    src.cli("volume", "create", "vol", "--backing", str(src.root / "vol.img"), "--size", str(SIZE))
    r = src.cli("volume", "verify", "vol", "--to", f"{net.dr_ip}:7700", check=False)
    assert r.returncode != 0 and "does not replicate" in r.stderr, r.stderr
