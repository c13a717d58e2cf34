"""A protected volume's life: create, up, a real ext4 filesystem, bookmarks,
views, rollback, restore, restart."""

import hashlib
import os
import time
from pathlib import Path

from conftest import run


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def make_volume(agent, tmp_path, name="db", size="256M", *extra):
    agent.cli("volume", "create", name, "--backing", str(tmp_path / f"{name}.img"), "--size", size,
              "--journal-size", "128M", *extra)
    dev = agent.cli("volume", "up", name).stdout.strip()
    assert dev.startswith("/dev/loop")
    return dev


def test_create_up_is_idempotent_and_status_reports(agent, tmp_path):
    dev = make_volume(agent, tmp_path)
    assert agent.cli("volume", "up", "db").stdout.strip() == dev
    st = agent.cli("volume", "status", "db", json_out=True)
    assert st["state"] == "up" and st["device"] == dev and st["size"] == 256 << 20
    assert st["oldest_point"]["seq"] == 0
    # Sparse backing of the requested size.
    assert os.path.getsize(tmp_path / "db.img") == 256 << 20
    all_ = agent.cli("volume", "status", json_out=True)
    assert [v["name"] for v in all_] == ["db"]


def test_create_errors(agent, tmp_path):
    make_volume(agent, tmp_path)
    r = agent.cli("volume", "create", "db", "--backing", str(tmp_path / "other.img"), "--size", "64M", check=False)
    assert r.returncode == 1 and "already exists" in r.stderr
    r = agent.cli("volume", "create", "dup", "--backing", str(tmp_path / "db.img"), check=False)
    assert "already used by volume 'db'" in r.stderr
    r = agent.cli("volume", "create", "nosize", "--backing", str(tmp_path / "missing.img"), check=False)
    assert "give --size" in r.stderr
    small = tmp_path / "small.img"
    small.write_bytes(b"\0" * 4096)
    r = agent.cli("volume", "create", "small", "--backing", str(small), "--size", "1M", check=False)
    assert "smaller than --size" in r.stderr
    r = agent.cli("volume", "create", "bad/name", "--backing", str(tmp_path / "b.img"), "--size", "64M", check=False)
    assert "invalid volume name" in r.stderr


def test_down_refuses_while_mounted(agent, tmp_path):
    dev = make_volume(agent, tmp_path)
    run(["mkfs.ext4", "-q", dev])
    mnt = agent.mount(dev, tmp_path / "mnt")
    r = agent.cli("volume", "down", "db", check=False)
    assert r.returncode == 1 and "busy" in r.stderr
    agent.umount(mnt)
    agent.cli("volume", "down", "db")
    assert agent.cli("volume", "status", "db", json_out=True)["state"] == "down"


def test_ext4_views_rollback_restore(agent, tmp_path):
    dev = make_volume(agent, tmp_path)
    run(["mkfs.ext4", "-q", dev])
    mnt = agent.mount(dev, tmp_path / "mnt")
    (mnt / "important.txt").write_text("version 1\n")
    data = os.urandom(8 << 20)
    (mnt / "blob").write_bytes(data)
    run(["sync"])
    bm = agent.cli("bookmark", "add", "db", "before-mistake", "--consistent", json_out=True)
    assert bm["consistent"] and bm["method"] == "fifreeze"
    t_before = time.time()
    time.sleep(0.05)
    # The mistake: overwrite and delete.
    (mnt / "important.txt").write_text("ransomware was here\n")
    (mnt / "blob").unlink()
    run(["sync"])

    # A read-only view at the bookmark shows the old files; the volume is unchanged.
    view = agent.cli("view", "open", "db", "--at", "before-mistake").stdout.strip()
    vm = agent.mount(view, tmp_path / "view", "ro,noload")
    assert (vm / "important.txt").read_text() == "version 1\n"
    assert (vm / "blob").read_bytes() == data
    agent.umount(vm)
    agent.cli("view", "close", view)
    assert (mnt / "important.txt").read_text() == "ransomware was here\n"

    # A view by time (RFC 3339 with an offset) lands on the same state.
    ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t_before)) + ".%03d+00:00" % (int(t_before * 1000) % 1000)
    view = agent.cli("view", "open", "db", "--at", ts).stdout.strip()
    vm = agent.mount(view, tmp_path / "view", "ro,noload")
    assert (vm / "important.txt").read_text() == "version 1\n"
    agent.umount(vm)
    agent.cli("view", "close", view)

    # A writable view takes writes into its overlay only.
    view = agent.cli("view", "open", "db", "--at", "before-mistake", "--writable").stdout.strip()
    vm = agent.mount(view, tmp_path / "view")
    (vm / "important.txt").write_text("scratch\n")
    agent.umount(vm)
    agent.cli("view", "close", view)
    assert (mnt / "important.txt").read_text() == "ransomware was here\n"

    # Restore the image at the bookmark into a file and check its files.
    out = tmp_path / "restored.img"
    r = agent.cli("volume", "restore", "db", "--at", "before-mistake", "--to", str(out), json_out=True)
    assert r["bytes"] == 256 << 20
    loop = run(["losetup", "--show", "-f", "-r", str(out)]).stdout.strip()
    try:
        rm = agent.mount(loop, tmp_path / "restored", "ro,noload")
        assert (rm / "important.txt").read_text() == "version 1\n"
        agent.umount(rm)
    finally:
        run(["losetup", "-d", loop], check=False)
    r = agent.cli("volume", "restore", "db", "--at", "before-mistake", "--to", str(out), check=False)
    assert "pass --force" in r.stderr

    # Rollback needs the volume down, rewinds it, and can itself be undone.
    r = agent.cli("volume", "rollback", "db", "--to", "before-mistake", check=False)
    assert "volume down" in r.stderr
    agent.umount(mnt)
    agent.cli("volume", "down", "db")
    rb = agent.cli("volume", "rollback", "db", "--to", "before-mistake", json_out=True)
    dev = agent.cli("volume", "up", "db").stdout.strip()
    mnt = agent.mount(dev, tmp_path / "mnt")
    assert (mnt / "important.txt").read_text() == "version 1\n"
    assert (mnt / "blob").read_bytes() == data
    agent.umount(mnt)
    agent.cli("volume", "down", "db")
    agent.cli("volume", "rollback", "db", "--to", rb["undo_bookmark"])
    dev = agent.cli("volume", "up", "db").stdout.strip()
    mnt = agent.mount(dev, tmp_path / "mnt")
    assert (mnt / "important.txt").read_text() == "ransomware was here\n"
    assert not (mnt / "blob").exists()


def test_point_errors_are_clear(agent, tmp_path):
    make_volume(agent, tmp_path)
    r = agent.cli("view", "open", "db", "--at", "2001-01-01T00:00:00Z", check=False)
    assert r.returncode == 1 and "before the oldest restorable point" in r.stderr and "seq:0" in r.stderr
    r = agent.cli("view", "open", "db", "--at", "no-such-label", check=False)
    assert "not a bookmark" in r.stderr
    r = agent.cli("view", "open", "db", "--at", "seq:99999", check=False)
    assert "newer than the latest point" in r.stderr
    r = agent.cli("view", "open", "db", "--at", "2026-13-01T00:00:00Z", check=False)
    assert "invalid timestamp" in r.stderr
    r = agent.cli("bookmark", "add", "db", "seq:5", check=False)
    assert "would be read as" in r.stderr


def test_sigterm_flushes_detaches_and_restart_brings_volumes_back(make_agent):
    a = make_agent()
    a.start()
    dev = make_volume(a, a.root)
    payload = os.urandom(1 << 20)
    with open(dev, "r+b", buffering=0) as f:
        f.seek(1 << 20)
        f.write(payload)
        os.fsync(f.fileno())
    assert a.stop() == 0
    assert not Path(f"/sys/block/{Path(dev).name}/loop").exists(), "loop device still attached after SIGTERM"
    a.start()
    st = a.cli("volume", "status", "db", json_out=True)
    assert st["state"] == "up"
    with open(st["device"], "rb") as f:
        f.seek(1 << 20)
        assert f.read(1 << 20) == payload


def test_missing_backing_at_restart_is_reported_and_others_work(make_agent):
    a = make_agent()
    a.start()
    make_volume(a, a.root, "gone", "64M")
    make_volume(a, a.root, "fine", "64M")
    a.stop()
    os.unlink(a.root / "gone.img")
    a.start()
    st = {v["name"]: v for v in a.cli("volume", "status", json_out=True)}
    assert st["gone"]["state"] == "failed"
    assert "gone.img" in st["gone"]["error"]
    assert st["fine"]["state"] == "up"
    r = a.cli("volume", "up", "gone", check=False)
    assert r.returncode == 1 and "not available" in r.stderr


def test_scheduled_bookmarks(agent, tmp_path):
    make_volume(agent, tmp_path)
    agent.cli("bookmark", "schedule", "db", "--every", "1s")
    time.sleep(3.5)
    bms = agent.cli("bookmark", "list", "db", json_out=True)
    assert len([b for b in bms if b["label"].startswith("auto-")]) >= 2
    r = agent.cli("bookmark", "schedule", "db", "--daily", "25:00", check=False)
    assert "HH:MM" in r.stderr


def test_changed_block_bitmap(agent, tmp_path):
    dev = make_volume(agent, tmp_path)
    agent.cli("bitmap", "create", "db", "nightly")
    with open(dev, "r+b", buffering=0) as f:
        f.seek(10 << 20)
        f.write(b"x" * 4096)
        os.fsync(f.fileno())
    ch = agent.cli("bitmap", "show", "db", "nightly", json_out=True)
    assert ch["extents"] == [{"offset": 10 << 20, "length": 65536}]


def test_damaged_bitmap_does_not_keep_the_volume_down(make_agent):
    """A bitmap file with a flipped byte (a bad sector, a stray write) must not stop
    the volume from coming back up: it is set aside, the event says so, and the
    bitmap now reports the whole volume as changed, so the next incremental pass
    reads everything and misses nothing."""
    a = make_agent()
    a.start()
    dev = make_volume(a, a.root, "db", "64M")
    a.cli("bitmap", "create", "db", "nightly")
    with open(dev, "r+b", buffering=0) as f:
        f.seek(10 << 20)
        f.write(b"x" * 4096)
        os.fsync(f.fileno())
    a.kill9()
    (cbt,) = list((a.state / "volumes" / "db" / "cbt").glob("nightly.cbt"))
    raw = bytearray(cbt.read_bytes())
    raw[100] ^= 0x10
    cbt.write_bytes(bytes(raw))
    a.start()
    st = a.cli("volume", "status", "db", json_out=True)
    assert st["state"] == "up", st
    events = [e for e in a.cli("events", "--volume", "db", json_out=True) if e["kind"] == "bitmap_damaged"]
    assert events and "nightly.cbt.damaged" in events[0]["message"], events
    assert (cbt.parent / "nightly.cbt.damaged").exists()
    ch = a.cli("bitmap", "show", "db", "nightly", json_out=True)
    assert ch["extents"] == [{"offset": 0, "length": 64 << 20}], ch


URING_PARAM = Path("/sys/module/fuse/parameters/enable_uring")


def _write_and_check(a, name, tmp_path):
    dev = a.cli("volume", "up", name).stdout.strip()
    data = os.urandom(1 << 20)
    with open(dev, "r+b", buffering=0) as f:
        f.seek(3 << 20)
        f.write(data)
        os.fsync(f.fileno())
    with open(dev, "rb", buffering=0) as f:
        f.seek(3 << 20)
        assert f.read(1 << 20) == data
    return a.cli("volume", "status", name, json_out=True)


def test_capture_transport_is_configurable(make_agent, tmp_path):
    # dev_fuse: the classic transport, whatever the kernel offers.
    a = make_agent("classic")
    cfg = a.root / "agent.toml"
    cfg.write_text('[capture]\nfuse_transport = "dev_fuse"\n')
    a.start(["--config", str(cfg)])
    a.cli("volume", "create", "v", "--backing", str(tmp_path / "v.img"), "--size", "64M")
    st = _write_and_check(a, "v", tmp_path)
    assert st["capture_transport"] == "FUSE /dev/fuse"
    assert "capture:       FUSE /dev/fuse" in a.cli("volume", "status", "v").stdout
    a.cli("volume", "down", "v")
    a.stop()

    # auto (the default): io_uring where the kernel has it, switched on by the agent.
    b = make_agent("auto")
    b.start()
    b.cli("volume", "create", "w", "--backing", str(tmp_path / "w.img"), "--size", "64M")
    st = _write_and_check(b, "w", tmp_path)
    if URING_PARAM.exists():
        assert URING_PARAM.read_text().strip() == "Y"
        assert st["capture_transport"] == "FUSE io_uring"
    else:
        assert st["capture_transport"] == "FUSE /dev/fuse"
    b.cli("volume", "down", "w")


def test_bad_capture_transport_is_a_clear_error(tmp_path):
    cfg = tmp_path / "agent.toml"
    cfg.write_text('[capture]\nfuse_transport = "uring"\n')
    from conftest import BIN
    r = run([BIN, "agent", "--config", str(cfg), "--state-dir", str(tmp_path / "s"),
             "--control", str(tmp_path / "s.sock")], check=False, timeout=20)
    assert r.returncode == 2
    assert "fuse transport 'uring'" in r.stderr and "auto, io_uring or dev_fuse" in r.stderr
