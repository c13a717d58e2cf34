"""Replication options a user sets per target: compression of the stream and
a bandwidth limit. Both are kept with the target across an agent restart and
shown by `volume targets`; the replica still equals the primary."""

import os
import time

import pytest

from test_replication import (SIZE, read_dev, replica_image, sites, start, up_and_replicate,  # noqa: F401
                              wait_caught_up)

MIB = 1 << 20


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
def test_compressed_and_rate_limited_stream(sites, codec):
    net, src, dr, _ = sites
    to = f"{net.dr_ip}:7700"
    start(dr, server=True)
    start(src)
    src.cli("volume", "create", "vol", "--backing", str(src.root / "vol.img"), "--size", str(SIZE))
    dev = src.cli("volume", "up", "vol").stdout.strip()
    r = src.cli("volume", "replicate", "vol", "--to", to, "--compress", codec, "--bandwidth", "2M")
    assert f"compress {codec}" in r.stdout and "limit 2.0 MiB/s" in r.stdout, r.stdout
    wait_caught_up(src)
    text = b"continuum replicates this line again and again\n" * (4 * MIB // 48)
    noise = os.urandom(4 * MIB)
    t0 = time.time()
    with open(dev, "r+b", buffering=0) as f:
        f.write(text[:4 * MIB])
        f.seek(8 * MIB)
        f.write(noise)  # incompressible: 4 MiB on the wire at 2 MiB/s
        os.fsync(f.fileno())
    t = wait_caught_up(src)
    elapsed = time.time() - t0
    assert elapsed >= 1.2, f"4 MiB of random data crossed a 2 MiB/s limit in {elapsed:.2f}s"
    assert t["compress"] == codec and t["bandwidth"] == 2 * MIB, t
    assert t["wire_bytes"] < t["bytes_sent"] - 3 * MIB, t  # the text compressed
    human = src.cli("volume", "targets", "vol").stdout
    assert codec in human and "2.0 MiB/s" in human, human

    src.kill9()  # the options are kept with the target's state
    start(src)
    t = wait_caught_up(src)
    assert t["compress"] == codec and t["bandwidth"] == 2 * MIB, t
    dev = src.cli("volume", "status", "vol", json_out=True)["device"]
    src.cli("bookmark", "add", "vol", "quiesced")
    wait_caught_up(src)
    assert replica_image(dr) == read_dev(dev)


def test_bad_options_are_refused(sites):
    net, src, _, _ = sites
    start(src)
    src.cli("volume", "create", "vol", "--backing", str(src.root / "vol.img"), "--size", str(SIZE))
    r = src.cli("volume", "replicate", "vol", "--to", f"{net.dr_ip}:7700", "--compress", "gzip", check=False)
    assert r.returncode != 0 and "--compress" in r.stderr, r.stderr
    r = src.cli("volume", "replicate", "vol", "--to", f"{net.dr_ip}:7700", "--bandwidth", "fast", check=False)
    assert r.returncode != 0 and "--bandwidth" in r.stderr, r.stderr
    assert src.cli("volume", "targets", "vol", json_out=True) == []


def test_damaged_target_files_are_reported_not_fatal(sites):
    """A target file or quorum file the agent cannot read (a bad disk, a careless
    edit) must not stop the agent or its volumes at restart: the volume comes back
    up, the event names the file and says what to do, and `volume replicate`
    again puts the target back."""
    net, src, dr, _ = sites
    to = f"{net.dr_ip}:7700"
    start(dr, server=True)
    start(src)
    up_and_replicate(net, src, "async")
    targets = src.state / "volumes" / "vol" / "targets"
    (target_file,) = list(targets.iterdir())
    src.kill9()
    target_file.write_text('{"address": 17, "mode": "async", "acked_seq": "12"}')
    (targets / (target_file.name + ".tmp")).write_text('{"address": "' + to + '"}')  # left by a crash mid-save
    (src.state / "volumes" / "vol" / "replication.json").write_text('{"quorum": "two"}')
    start(src)
    st = src.cli("volume", "status", "vol", json_out=True)
    assert st["state"] == "up" and st["device"], st
    assert src.cli("volume", "targets", "vol", json_out=True) == []
    events = src.cli("events", "--volume", "vol", json_out=True)
    failed = [e["message"] for e in events if e["kind"] == "replication_failed"]
    assert any(target_file.name in m and "address" in m and "volume replicate" in m for m in failed), failed
    assert any("replication.json" in m for m in failed), failed
    src.cli("volume", "replicate", "vol", "--to", to)
    with open(st["device"], "r+b", buffering=0) as f:
        f.write(os.urandom(MIB))
        os.fsync(f.fileno())
    wait_caught_up(src)
    src.cli("bookmark", "add", "vol", "quiesced")
    wait_caught_up(src)
    assert replica_image(dr) == read_dev(st["device"])
