"""Model-based test of capture and CDP through the real block device.

Random writes with known contents go through the volume's loop device, each
acknowledged by fsync. Views opened at many points (timestamps, bookmarks,
sequence numbers) must equal the model's image at that point, including
after `kill -9` of the agent in the middle of a write stream; every write
acknowledged before the kill must survive."""

import os
import random
import threading
import time
from pathlib import Path

import pytest

BS = 4096
SIZE = 32 << 20


def rfc3339(t):
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%06dZ" % (int(t * 1e6) % 1000000)


def image(writes, upto):
    img = bytearray(SIZE)
    for off, data in writes[:upto]:
        img[off:off + len(data)] = data
    return bytes(img)


def read_dev(dev):
    with open(dev, "rb", buffering=0) as f:
        return f.read(SIZE)


def view_image(agent, at):
    dev = agent.cli("view", "open", "vol", "--at", at).stdout.strip()
    try:
        return read_dev(dev)
    finally:
        agent.cli("view", "close", dev)


def one_write(rng):
    nblocks = rng.randint(1, 16)
    block = rng.randrange(0, SIZE // BS - nblocks)
    return block * BS, rng.randbytes(nblocks * BS)


URING = Path("/sys/module/fuse/parameters/enable_uring").exists()


# Both FUSE transports (ADR 0010): the default (io_uring where the kernel has
# it) and the classic /dev/fuse loop.
@pytest.mark.parametrize("transport", ["auto", "dev_fuse"])
def test_views_match_model_across_kill9(make_agent, transport):
    rng = random.Random(1234)
    a = make_agent()
    cfg = a.root / "agent.toml"
    cfg.write_text(f'[capture]\nfuse_transport = "{transport}"\n')
    a.start(["--config", str(cfg)])
    a.cli("volume", "create", "vol", "--backing", str(a.root / "vol.img"), "--size", str(SIZE),
          "--journal-size", "256M")
    dev = a.cli("volume", "up", "vol").stdout.strip()
    expected = "FUSE io_uring" if transport == "auto" and URING else "FUSE /dev/fuse"
    assert a.cli("volume", "status", "vol", json_out=True)["capture_transport"] == expected

    writes = []       # acknowledged writes, in order
    points = []       # (how, point text, number of writes included)
    fd = os.open(dev, os.O_RDWR)
    try:
        for i in range(240):
            off, data = one_write(rng)
            os.pwrite(fd, data, off)
            os.fsync(fd)
            writes.append((off, data))
            if i % 20 == 5:
                points.append(("time", rfc3339(time.time()), len(writes)))
                time.sleep(0.002)
            if i % 40 == 13:
                a.cli("bookmark", "add", "vol", f"bm{i}")
                points.append(("bookmark", f"bm{i}", len(writes)))
            if i % 40 == 27:
                seq = a.cli("volume", "status", "vol", json_out=True)["last_seq"]
                points.append(("seq", f"seq:{seq}", len(writes)))
    finally:
        os.close(fd)

    # A writer keeps going while the agent is killed with -9.
    inflight = []
    stop = threading.Event()

    def writer():
        wfd = os.open(dev, os.O_RDWR)
        try:
            while not stop.is_set():
                off, data = one_write(rng)
                inflight[:] = [(off, data)]
                try:
                    os.pwrite(wfd, data, off)
                    os.fsync(wfd)
                except OSError:
                    return
                writes.append((off, data))
                inflight[:] = []
        finally:
            try:
                os.close(wfd)
            except OSError:
                pass

    t = threading.Thread(target=writer)
    t.start()
    time.sleep(1.5)
    a.kill9()
    stop.set()
    t.join(timeout=60)
    assert not t.is_alive(), "writer hung after the agent was killed"
    acked = len(writes)
    assert acked > 250, "too few writes acknowledged before the kill"

    a.start(["--config", str(cfg)])
    st = a.cli("volume", "status", "vol", json_out=True)
    assert st["state"] == "up", st
    assert st["capture_transport"] == expected
    got = read_dev(st["device"])
    want = image(writes, acked)
    if got != want:
        # Only blocks of the single unacknowledged write may differ, and then
        # they must hold either the old or the new data.
        assert inflight, "volume differs from the acknowledged writes"
        off, data = inflight[0]
        alt = bytearray(want)
        alt[off:off + len(data)] = data
        for b in range(0, SIZE, BS):
            if got[b:b + BS] != want[b:b + BS]:
                assert got[b:b + BS] == alt[b:b + BS], f"block at {b} lost an acknowledged write"

    # Every recorded point, by time, bookmark and seq, matches the model.
    for how, at, n in points:
        assert view_image(a, at) == image(writes, n), f"view at {how} {at} differs from the model"

    # And the timeline continues after the restart.
    fd = os.open(st["device"], os.O_RDWR)
    try:
        off, data = one_write(rng)
        os.pwrite(fd, data, off)
        os.fsync(fd)
    finally:
        os.close(fd)
    a.cli("bookmark", "add", "vol", "after-restart")
    assert view_image(a, "after-restart")[off:off + len(data)] == data
