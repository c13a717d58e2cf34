"""Differential sync: a target that already holds an image of the volume
(replication removed and added again while the primary changed) gets only
the blocks that differ, found by comparing checksums, and ends byte for byte
equal to the primary."""

import os
import random
import time

from conftest import BIN, run  # noqa: F401
from test_replication import SIZE, read_dev, replica_image, sites, start, wait_caught_up  # noqa: F401

MIB = 1 << 20
BLOCK = 4096


def change_blocks(dev, fraction, seed):
    """Overwrites `fraction` of the volume's 4 KiB blocks, spread at random;
    returns how many bytes changed."""
    rng = random.Random(seed)
    blocks = rng.sample(range(SIZE // BLOCK), int(SIZE // BLOCK * fraction))
    fd = os.open(dev, os.O_RDWR)
    try:
        for b in blocks:
            os.pwrite(fd, rng.randbytes(BLOCK), b * BLOCK)
        os.fsync(fd)
    finally:
        os.close(fd)
    return len(blocks) * BLOCK


def test_replicate_again_ships_only_the_changed_blocks(sites):
    net, src, dr, _ = sites
    to = f"{net.dr_ip}:7700"
    start(dr, server=True)
    start(src)
    src.cli("volume", "create", "vol", "--backing", str(src.root / "vol.img"), "--size", str(SIZE))
    dev = src.cli("volume", "up", "vol").stdout.strip()
    with open(dev, "r+b", buffering=0) as f:
        f.write(os.urandom(48 * MIB))  # the last 16 MiB stay zero on both sides
        os.fsync(f.fileno())
    src.cli("volume", "replicate", "vol", "--to", to)
    first = wait_caught_up(src)
    assert first["bytes_sent"] >= 48 * MIB, first  # a new replica gets everything

    src.cli("volume", "unreplicate", "vol", "--to", to)
    changed = change_blocks(dev, 0.01, seed=5)
    # A data block zeroed on the primary must be zeroed on the replica too.
    with open(dev, "r+b", buffering=0) as f:
        f.seek(7 * MIB)
        f.write(bytes(BLOCK))
        os.fsync(f.fileno())
    changed += BLOCK

    t0 = time.time()
    src.cli("volume", "replicate", "vol", "--to", to)
    t = wait_caught_up(src)
    took = time.time() - t0
    diff = t["diff_sync"]
    assert diff and diff["compared_bytes"] == SIZE and not diff["fallback"], t
    assert diff["differing_bytes"] <= changed, t
    # Only about the changed bytes were shipped: each resent block costs a
    # 64-byte record header; the checksums add ~0.02% of the volume.
    assert t["bytes_sent"] <= 1.1 * changed, (t["bytes_sent"], changed, t)
    assert diff["sums_bytes"] + diff["request_bytes"] <= SIZE // 1000, t
    assert replica_image(dr) == read_dev(dev), "replica differs from the primary after the differential sync"
    v = src.cli("volume", "verify", "vol", "--to", to, json_out=True)
    assert v["differing"] == [], v
    print(f"diff sync of {SIZE >> 20} MiB with {changed} bytes changed: {t['bytes_sent']} record bytes, "
          f"{diff['sums_bytes'] + diff['request_bytes']} checksum bytes, {took:.1f} s")


def test_replicate_again_with_no_change_ships_nothing_and_writes_continue(sites):
    net, src, dr, _ = sites
    to = f"{net.dr_ip}:7700"
    start(dr, server=True)
    start(src)
    src.cli("volume", "create", "vol", "--backing", str(src.root / "vol.img"), "--size", str(SIZE))
    dev = src.cli("volume", "up", "vol").stdout.strip()
    with open(dev, "r+b", buffering=0) as f:
        f.write(os.urandom(16 * MIB))
        os.fsync(f.fileno())
    src.cli("volume", "replicate", "vol", "--to", to)
    wait_caught_up(src)
    src.cli("volume", "unreplicate", "vol", "--to", to)
    src.cli("volume", "replicate", "vol", "--to", to)
    # Writes during the comparison travel the stream as usual.
    with open(dev, "r+b", buffering=0) as f:
        f.seek(30 * MIB)
        f.write(os.urandom(MIB))
        os.fsync(f.fileno())
    t = wait_caught_up(src)
    assert t["diff_sync"]["compared_bytes"] == SIZE, t
    assert t["bytes_sent"] <= 2 * MIB + 64 * 1024, t
    assert replica_image(dr) == read_dev(dev)
