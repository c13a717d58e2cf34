"""Destructive tests: the agent's own disk fills up; hooks for consistent
bookmarks; a corrupted journal file."""

import contextlib
import os
import subprocess
from pathlib import Path

import pytest

from conftest import Agent, run


@contextlib.contextmanager
def agent_with_small_disk(tmp_path, disk, size):
    """An agent under tmp_path/a, and a tmpfs of `size` mounted at `disk`
    (created); both are cleaned up on the way out."""
    root = tmp_path / "a"
    root.mkdir()
    disk.mkdir(parents=True)
    run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(disk)])
    a = Agent(root)
    try:
        yield a
    finally:
        a.cleanup()
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)


@pytest.fixture
def small_state_agent(tmp_path):
    """An agent whose state directory is a 48 MiB tmpfs: its journals fill it."""
    with agent_with_small_disk(tmp_path, tmp_path / "a" / "state", "48m") as a:
        yield a


@pytest.mark.parametrize("size", [1 << 20, 64 << 10], ids=["direct-1MiB", "journal-first-64KiB"])
def test_state_disk_full_refuses_writes_clearly_and_loses_nothing(small_state_agent, tmp_path, size):
    a = small_state_agent
    a.start()
    a.cli("volume", "create", "v", "--backing", str(tmp_path / "v.img"), "--size", "64M",
          "--journal-size", "1G")
    dev = a.cli("volume", "up", "v").stdout.strip()
    acked = {}
    error = None
    failed_off = None
    fd = os.open(dev, os.O_RDWR)
    try:
        for i in range(400 * (1 << 20) // size):
            data = os.urandom(size)
            off = (i % (60 * (1 << 20) // size)) * size
            try:
                os.pwrite(fd, data, off)
                os.fsync(fd)
            except OSError as e:
                error = e
                failed_off = off
                break
            acked[off] = data
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    assert error is not None, "writes kept succeeding on a full disk"
    st = a.cli("volume", "status", "v", json_out=True)
    assert st["state"] == "failed"
    assert "No space left" in st.get("error", ""), st
    events = a.cli("events", "--volume", "v", json_out=True)
    assert any(e["kind"] in ("apply_failed", "write_log_failed") for e in events)

    # Give the disk room and restart: every acknowledged write is there.
    a.kill9()
    run(["mount", "-o", "remount,size=1g", str(a.state)])
    a.start()
    st = a.cli("volume", "status", "v", json_out=True)
    assert st["state"] == "up", st
    with open(st["device"], "rb", buffering=0) as f:
        for off, data in acked.items():
            if off == failed_off:
                # The failed (never acknowledged) write went over this range:
                # as on a disk, its blocks may now hold old or new data.
                continue
            f.seek(off)
            assert f.read(len(data)) == data, f"acknowledged write at {off} lost"


def test_backing_disk_full_after_a_journal_first_acknowledgement_loses_nothing(tmp_path):
    """Small writes are acknowledged from the journals and reach the backing
    later (docs/adr/0012-journal-first-cdp-writes.md). When the backing's disk
    is full at that point, the volume fails, the next fsync says so, and after
    the disk has room again a restart puts every acknowledged write back."""
    disk = tmp_path / "backing-disk"
    with agent_with_small_disk(tmp_path, disk, "8m") as a:
        a.start()
        a.cli("volume", "create", "v", "--backing", str(disk / "v.img"), "--size", "64M")
        dev = a.cli("volume", "up", "v").stdout.strip()
        acked = {}
        error = None
        fd = os.open(dev, os.O_RDWR)
        try:
            for i in range(400):  # 25 MiB into a sparse file on an 8 MiB disk
                data = os.urandom(64 << 10)
                try:
                    os.pwrite(fd, data, i * len(data))
                    os.fsync(fd)
                except OSError as e:
                    error = e
                    break
                acked[i * len(data)] = data
        finally:
            try:
                os.close(fd)
            except OSError:
                pass
        assert error is not None, "writes kept succeeding with the backing's disk full"
        assert len(acked) >= 64, "the disk filled before 4 MiB were written"
        st = a.cli("volume", "status", "v", json_out=True)
        assert st["state"] == "failed", st
        assert "No space left" in st.get("error", ""), st
        assert any(e["kind"] == "apply_failed" for e in a.cli("events", "--volume", "v", json_out=True))

        a.kill9()
        run(["mount", "-o", "remount,size=128m", str(disk)])
        a.start()
        st = a.cli("volume", "status", "v", json_out=True)
        assert st["state"] == "up", st
        with open(st["device"], "rb", buffering=0) as f:
            for off, data in acked.items():
                f.seek(off)
                assert f.read(len(data)) == data, f"acknowledged write at {off} lost"


def test_consistent_bookmark_runs_hooks(make_agent):
    a = make_agent()
    marker = a.root / "hooks.log"
    cfg = a.root / "agent.toml"
    cfg.write_text(f"""
[hooks.db]
pre = "echo pre >> {marker}"
post = "echo post >> {marker}"
""")
    a.start(["--config", str(cfg)])
    a.cli("volume", "create", "db", "--backing", str(a.root / "db.img"), "--size", "64M")
    bm = a.cli("bookmark", "add", "db", "app-consistent", "--consistent", json_out=True)
    assert bm["consistent"] and bm["method"] == "hooks"
    assert marker.read_text().split() == ["pre", "post"]
    kinds = {b["label"]: b for b in a.cli("bookmark", "list", "db", json_out=True)}
    assert kinds["app-consistent"]["consistent"]


def test_consistent_bookmark_without_fs_or_hooks_is_refused(agent, tmp_path):
    agent.cli("volume", "create", "v", "--backing", str(tmp_path / "v.img"), "--size", "64M")
    r = agent.cli("bookmark", "add", "v", "x", "--consistent", check=False)
    assert r.returncode == 1 and "--consistent needs" in r.stderr


def test_failing_pre_hook_places_no_bookmark(make_agent):
    a = make_agent()
    cfg = a.root / "agent.toml"
    cfg.write_text('[hooks.db]\npre = "exit 3"\n')
    a.start(["--config", str(cfg)])
    a.cli("volume", "create", "db", "--backing", str(a.root / "db.img"), "--size", "64M")
    r = a.cli("bookmark", "add", "db", "x", "--consistent", check=False)
    assert r.returncode == 1 and "pre-bookmark hook" in r.stderr and "exit status 3" in r.stderr
    assert a.cli("bookmark", "list", "db", json_out=True) == []


@pytest.mark.parametrize("text,says", [
    ("state_dir = \n", "line 1"),                                  # not TOML
    ("retension = \"7d\"\n", "retension: unknown key"),           # a typo at the top
    ("[defaults]\njournal_size = 1073741824\n", "defaults.journal_size: must be a string"),
    ("[defaults]\nretention = \"7 weeks\"\n", "defaults.retention"),
    ("[defaults]\ncache = \"1G\"\n", "defaults.cache: unknown key"),
    ("[capture]\nring_threads = \"4\"\n", "capture.ring_threads: must be a whole number"),
    ("[hooks.db]\npre = 5\n", "hooks.db.pre: must be a string"),
    ("hooks = 3\n", "hooks: must be a table"),
])
def test_bad_config_file_is_a_clear_error(tmp_path, text, says):
    """A config the agent cannot use stops it at once, naming the file and the key:
    never a setting silently left at its default."""
    cfg = tmp_path / "bad.toml"
    cfg.write_text(text)
    from conftest import BIN
    r = run([BIN, "agent", "--config", str(cfg), "--state-dir", str(tmp_path / "s"),
             "--control", str(tmp_path / "s.sock")], check=False, timeout=20)
    assert r.returncode == 2 and "bad.toml" in r.stderr and says in r.stderr, r.stderr


def test_corrupted_write_log_fails_only_that_volume(make_agent):
    a = make_agent()
    a.start()
    for n in ("bad", "good"):
        a.cli("volume", "create", n, "--backing", str(a.root / f"{n}.img"), "--size", "64M")
        dev = a.cli("volume", "up", n).stdout.strip()
        fd = os.open(dev, os.O_RDWR)
        os.pwrite(fd, os.urandom(1 << 20), 0)
        os.fsync(fd)
        os.close(fd)
    a.kill9()  # the write log still holds the writes (no clean checkpoint)
    segs = sorted((a.state / "volumes" / "bad" / "wlog").glob("*.log"))
    # Damage every segment's first header: recovery cannot trust this log.
    for s in segs:
        with open(s, "r+b") as f:
            f.seek(10)
            f.write(b"\xff\xff")
    a.start()
    st = {v["name"]: v for v in a.cli("volume", "status", json_out=True)}
    assert st["good"]["state"] == "up"
    if segs and st["bad"]["state"] == "failed":
        assert "write log" in st["bad"]["error"] or "checksum" in st["bad"]["error"]
