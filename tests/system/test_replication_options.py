"""Replication options a user sets per target: compression of the stream and
a bandwidth limit. Both are kept with the target across an agent restart and
shown by `volume targets`; the replica still equals the primary."""

import os
import time

import pytest

from test_replication import SIZE, read_dev, replica_image, sites, start, wait_caught_up  # noqa: F401

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
