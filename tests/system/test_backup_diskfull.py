"""Backups and restores on a full disk (issue 4, faults). The repository or the
restore target lives on a small tmpfs:

- a backup that runs out of space fails with an error that says so, lists no
  half-written point, and leaves a repository that checks clean and still
  restores every earlier point; once the disk has room the same backup works;
- a restore that runs out of space fails with an error naming the disk (no
  hang), and the same command finishes the restore once the disk has room.

The tmpfs mounts are unmounted even when a test fails."""

import os
import subprocess

import pytest

from conftest import run
from test_backup import Repo, sha

MiB = 1 << 20


@pytest.fixture
def tmpfs(tmp_path):
    mounted = []

    def make(name, size):
        d = tmp_path / name
        d.mkdir()
        run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(d)])
        mounted.append(d)
        return d

    try:
        yield make
    finally:
        for m in reversed(mounted):
            subprocess.run(["umount", "-l", str(m)], capture_output=True)


def grow(d, size):
    run(["mount", "-o", f"remount,size={size}", str(d)])


def assert_same_tree(a_root, b_root):
    names = sorted(os.listdir(a_root))
    assert sorted(os.listdir(b_root)) == names
    for n in names:
        a, b = os.lstat(a_root / n), os.lstat(b_root / n)
        assert (a.st_mode, a.st_size, a.st_mtime_ns) == (b.st_mode, b.st_size, b.st_mtime_ns), n
        assert sha(a_root / n) == sha(b_root / n), n


def random_tree(root, files, size):
    root.mkdir(parents=True)
    for i in range(files):
        (root / f"f{i:03d}.bin").write_bytes(os.urandom(size))
    (root / "small.txt").write_text("kept\n")


def test_backup_to_a_full_repository_disk_keeps_the_repository_usable(tmp_path, tmpfs):
    disk = tmpfs("repodisk", "40M")
    repo = Repo(tmp_path)
    repo.path = disk / "repo"
    repo.cli("repo", "init")
    first = tmp_path / "first"
    random_tree(first, 2, 4 * MiB)
    p1 = repo.cli("backup", "path", str(first), json_out=True)

    big = tmp_path / "big"
    random_tree(big, 12, 4 * MiB)  # 48 MiB of incompressible data: does not fit
    res = repo.cli("backup", "path", str(big), check=False, timeout=120)
    assert res.returncode != 0
    assert "No space left on device" in res.stderr, res.stderr
    assert str(disk) in res.stderr, res.stderr  # names where it failed

    points = repo.cli("backup", "list", json_out=True)
    assert [p["id"] for p in points] == [p1["id"]], points  # no half-written point
    chk = repo.cli("repo", "check", "--read-data", check=False)
    assert chk.returncode == 0, chk.stdout + chk.stderr
    out = tmp_path / "out1"
    repo.cli("restore", p1["id"], "--to", str(out))
    assert_same_tree(first, out / "first")

    # With room again the same backup works, and both points restore.
    grow(disk, "256M")
    p2 = repo.cli("backup", "path", str(big), json_out=True)
    assert {p["id"] for p in repo.cli("backup", "list", json_out=True)} == {p1["id"], p2["id"]}
    assert repo.cli("repo", "check", "--read-data", check=False).returncode == 0
    out2 = tmp_path / "out2"
    repo.cli("restore", p2["id"], "--to", str(out2))
    assert_same_tree(big, out2 / "big")


def test_restore_to_a_full_disk_fails_clearly_and_finishes_with_room(tmp_path, tmpfs):
    repo = Repo(tmp_path)
    repo.cli("repo", "init")
    src = tmp_path / "data"
    random_tree(src, 10, 4 * MiB)
    point = repo.cli("backup", "path", str(src), json_out=True)

    target = tmpfs("target", "16M")
    res = repo.cli("restore", point["id"], "--to", str(target), check=False, timeout=120)
    assert res.returncode == 1, res.stderr
    assert "No space left on device" in res.stderr, res.stderr
    assert str(target) in res.stderr, res.stderr

    grow(target, "128M")
    res = repo.cli("restore", point["id"], "--to", str(target), "--verify", "--json")
    assert_same_tree(src, target / "data")
    assert not (target / ".continuum-restore").exists()
    assert sorted(os.listdir(target)) == ["data"]
