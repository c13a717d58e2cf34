"""Backup of protected volumes (issue 4): `backup volume` through a real agent
on a real ext4 filesystem; full, incremental and differential points restore
to exactly the volume as of their bookmark; chains and --keep-chains; a
backup killed with SIGKILL leaves no point behind and its view is closed by the
agent. Mounts, loop devices, views
and processes are released even when a test fails."""

import hashlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, run


def sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class VolRepo:
    """A repository next to an agent; commands reach the agent by --control."""

    def __init__(self, agent, root: Path):
        self.agent = agent
        self.path = root / "repo"
        self.pwfile = root / "pw"
        self.pwfile.write_text("pw for volume backups\n")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("CONTINUUM_")}

    def args(self, *args, json_out=False):
        return ([BIN, "--control", str(self.agent.sock)] + (["--json"] if json_out else []) + list(args) +
                ["--repo", str(self.path), "--password-file", str(self.pwfile)])

    def cli(self, *args, check=True, json_out=False, timeout=600):
        import json
        r = run(self.args(*args, json_out=json_out), check=check, env=self.env, timeout=timeout)
        return json.loads(r.stdout) if (json_out and check) else r

    def backup(self, *extra):
        return self.cli("backup", "volume", "db", *extra, json_out=True)

    def points(self):
        return self.cli("backup", "list", json_out=True)


@pytest.fixture
def vol(agent, tmp_path):
    agent.cli("volume", "create", "db", "--backing", str(tmp_path / "db.img"), "--size", "256M",
              "--journal-size", "256M")
    dev = agent.cli("volume", "up", "db").stdout.strip()
    run(["mkfs.ext4", "-q", "-E", "lazy_itable_init=0,lazy_journal_init=0", dev])
    mnt = agent.mount(dev, tmp_path / "mnt")
    r = VolRepo(agent, tmp_path)
    r.cli("repo", "init")
    return r, mnt


def close_views(agent):
    for v in agent.cli("view", "list", json_out=True):
        agent.cli("view", "close", v["device"], check=False)


def check_point(repo, point, tmp_path):
    """The restored point equals a view of the volume at the point's bookmark."""
    agent = repo.agent
    out = tmp_path / ("restored-" + point["id"][:12])
    repo.cli("restore", point["id"], "--to", str(out), "--verify")
    view = agent.cli("view", "open", "db", "--at", point["volume"]["bookmark"]).stdout.strip()
    try:
        assert sha(out) == sha(view), f"point {point['id'][:12]} ({point['kind']}) differs from its bookmark"
    finally:
        agent.cli("view", "close", view)
    out.unlink()


def write_file(mnt, name, size):
    data = os.urandom(size)
    (mnt / name).write_bytes(data)
    run(["sync"])
    return data


def test_kinds_restore_exactly_and_chains_are_recorded(agent, vol, tmp_path):
    repo, mnt = vol
    a = write_file(mnt, "a.bin", 8 << 20)
    full = repo.backup()  # forever incremental: the first point is full
    assert full["kind"] == "full" and full["volume"]["read"] == "all"
    assert full["sources"] == ["volume:db"] and full["bytes_read"] == 256 << 20
    check_point(repo, full, tmp_path)

    write_file(mnt, "b.bin", 2 << 20)
    inc = repo.backup()
    assert inc["kind"] == "incremental" and inc["volume"]["read"] == "changed"
    assert inc["parent"] == full["id"] and inc["full"] == full["id"]
    assert inc["bytes_read"] < 64 << 20, inc  # only the changed regions
    check_point(repo, inc, tmp_path)

    write_file(mnt, "c.bin", 2 << 20)
    inc2 = repo.backup("--kind", "incremental")
    assert inc2["parent"] == inc["id"]
    diff = repo.backup("--kind", "differential", "--tag", "weekly")
    assert diff["kind"] == "differential" and diff["parent"] == full["id"] and diff["full"] == full["id"]
    assert diff["volume"]["read"] == "changed" and diff["tags"] == ["weekly"]
    assert diff["bytes_read"] >= inc2["bytes_read"]  # everything since the full, b and c
    check_point(repo, diff, tmp_path)

    # An application-consistent point at a bookmark made with --consistent.
    (mnt / "app.txt").write_text("committed\n")
    run(["sync"])
    agent.cli("bookmark", "add", "db", "app-1", "--consistent")
    (mnt / "app.txt").write_text("after the bookmark\n")
    run(["sync"])
    app = repo.backup("--bookmark", "app-1")
    assert app["volume"]["bookmark"] == "app-1" and app["kind"] == "incremental"
    check_point(repo, app, tmp_path)
    out = tmp_path / "app.img"
    repo.cli("restore", app["id"], "--to", str(out))
    loop = run(["losetup", "--show", "-f", "-r", str(out)]).stdout.strip()
    try:
        m = agent.mount(loop, tmp_path / "app-mnt", "ro,noload")
        assert (m / "app.txt").read_text() == "committed\n"
        assert (m / "a.bin").read_bytes() == a
        agent.umount(m)
    finally:
        run(["losetup", "-d", loop], check=False)

    # The point after it is still exact (the bitmap was kept across --bookmark).
    write_file(mnt, "d.bin", 1 << 20)
    after = repo.backup()
    assert after["parent"] == app["id"] and after["volume"]["read"] == "changed"
    check_point(repo, after, tmp_path)

    kinds = [p["kind"] for p in repo.points()]
    assert kinds == ["full", "incremental", "incremental", "differential", "incremental", "incremental"]
    listing = repo.cli("backup", "list").stdout
    assert "differential" in listing and "incremental" in listing
    assert agent.cli("view", "list", json_out=True) == []


def test_keep_chains_keeps_newest_chains_whole(agent, vol, tmp_path):
    repo, mnt = vol
    ids = []
    for i in range(3):
        write_file(mnt, f"f{i}.bin", 1 << 20)
        full = repo.backup("--kind", "full")
        write_file(mnt, f"g{i}.bin", 1 << 20)
        inc = repo.backup()
        assert inc["full"] == full["id"]
        ids.append((full["id"], inc["id"]))
    r = repo.cli("forget", "--keep-chains", "2", "--prune", json_out=True)
    assert r["removed"] == 2
    left = {p["id"] for p in repo.points()}
    assert left == {ids[1][0], ids[1][1], ids[2][0], ids[2][1]}
    repo.cli("repo", "check", "--read-data")
    # A point whose full was forgotten still restores whole.
    for p in repo.points():
        check_point(repo, p, tmp_path)
    # A differential now goes against the newest full.
    write_file(mnt, "h.bin", 1 << 20)
    d = repo.backup("--kind", "differential")
    assert d["parent"] == ids[2][0]


def test_missing_bitmap_falls_back_to_full_read(agent, vol, tmp_path):
    repo, mnt = vol
    full = repo.backup()
    agent.cli("bitmap", "delete", "db", full["volume"]["bitmap"])
    write_file(mnt, "x.bin", 1 << 20)
    r = repo.cli("backup", "volume", "db")
    assert "reading the whole volume" in r.stderr
    p = repo.points()[-1]
    assert p["kind"] == "incremental" and p["volume"]["read"] == "all" and p["bytes_read"] == 256 << 20
    check_point(repo, p, tmp_path)


def test_sigkill_mid_backup_leaves_no_point(agent, vol, tmp_path):
    repo, mnt = vol
    first = repo.backup()
    write_file(mnt, "big.bin", 96 << 20)
    proc = subprocess.Popen(repo.args("backup", "volume", "db", "--kind", "full"), env=repo.env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while time.time() < deadline and not agent.cli("view", "list", json_out=True):
            assert proc.poll() is None, "backup finished before it could be killed"
            time.sleep(0.01)
        time.sleep(0.05)
        assert proc.poll() is None, "backup finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The killed run could not close its view: the agent sees its process gone
    # and closes it (and says so in the events).
    deadline = time.time() + 10
    while time.time() < deadline and agent.cli("view", "list", json_out=True):
        time.sleep(0.1)
    assert agent.cli("view", "list", json_out=True) == []
    events = agent.cli("events", json_out=True)
    assert any(e["kind"] == "view_owner_gone" for e in events), events
    assert [p["id"] for p in repo.points()] == [first["id"]]
    repo.cli("repo", "check")
    nxt = repo.backup()
    assert nxt["parent"] == first["id"]
    check_point(repo, nxt, tmp_path)
