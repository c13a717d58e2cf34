"""An interrupted restore resumes (issue 4): a restore of an image point and of
a path point is killed with SIGKILL midway (once its progress file records
progress), the same command run again says it resumes, writes only the rest,
and the result is byte- and metadata-identical to the source (and passes
--verify). A target holding another restore's progress file is refused unless
--restart. Processes the tests start are killed by PID in finally blocks."""

import json
import os
import shutil
import signal
import stat
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN
from test_backup import Repo, sha


@pytest.fixture
def repo(tmp_path):
    r = Repo(tmp_path)
    r.cli("repo", "init")
    return r


def progress_done(path: Path):
    """The `done` count of a progress file, or None (absent or being replaced)."""
    try:
        for line in path.read_text().splitlines():
            if line.startswith("done "):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def start_restore(repo, point_id, to, *extra):
    cmd = [BIN, "restore", point_id, "--to", str(to), "--progress", "none", "--repo", str(repo.path),
           "--password-file", str(repo.pwfile), *extra]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTINUUM_")}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def kill_midway(proc, progress_file: Path, timeout=30):
    """SIGKILLs `proc` as soon as its progress file records progress; returns the
    recorded count. Fails the test if the restore finished first."""
    deadline = time.time() + timeout
    try:
        while time.time() < deadline:
            done = progress_done(progress_file)
            if done:
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
                assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stderr.read())
                return done
            if proc.poll() is not None:
                raise AssertionError(f"restore ended ({proc.returncode}) before it could be interrupted: "
                                     f"{proc.stderr.read().decode()}")
            time.sleep(0.002)
        raise AssertionError("no progress recorded in " + str(progress_file))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_interrupted_image_restore_resumes(repo, tmp_path):
    size = 384 << 20
    img = tmp_path / "disk.img"
    with open(img, "wb") as f:
        for _ in range(size >> 24):
            f.write(os.urandom(1 << 24))
    want = sha(img)
    point = repo.cli("backup", "image", str(img), json_out=True)
    other_img = tmp_path / "other.img"
    other_img.write_bytes(os.urandom(3 << 20))
    other = repo.cli("backup", "image", str(other_img), json_out=True)
    img.unlink()  # room on the disk; the point is the reference now

    out = tmp_path / "restored.img"
    pfile = Path(str(out) + ".continuum-restore")
    recorded = kill_midway(start_restore(repo, point["id"], out), pfile)
    assert 0 < recorded < progress_done_total(pfile)

    # Another point into the same target is refused, naming the file and the ways out.
    saved = tmp_path / "saved-progress"
    shutil.copy(pfile, saved)
    bad = repo.cli("restore", other["id"], "--to", str(out), check=False)
    assert bad.returncode == 1
    for s in (str(pfile), point["id"][:12], other["id"][:12], "--restart", "delete"):
        assert s in bad.stderr, (s, bad.stderr)
    assert os.path.getsize(out) == size  # untouched

    t0 = time.time()
    res = repo.cli("restore", point["id"], "--to", str(out), "--verify", "--json")
    resumed = json.loads(res.stdout)
    assert f"resuming restore of {point['id'][:12]} at " in res.stderr, res.stderr
    assert " of 384.0 MiB" in res.stderr, res.stderr
    assert resumed["resumed"] and resumed["verified"]
    assert resumed["bytes_resumed"] >= recorded << 20, resumed  # 1 MiB chunks (the default)
    assert resumed["bytes_written"] + resumed["bytes_resumed"] == size, resumed
    assert resumed["bytes_written"] < size
    assert resumed["bytes_verified"] == size  # what the killed run wrote is verified too
    assert not pfile.exists()
    assert sha(out) == want
    print(f"resumed after {resumed['bytes_resumed'] >> 20} MiB, wrote {resumed['bytes_written'] >> 20} MiB "
          f"in {time.time() - t0:.1f}s")

    # A completed restore leaves nothing to resume: the same command starts over.
    again = repo.cli("restore", point["id"], "--to", str(out), "--json")
    assert "resuming" not in again.stderr and json.loads(again.stdout)["bytes_written"] == size

    # --restart discards another restore's progress file.
    shutil.copy(saved, pfile)
    assert repo.cli("restore", other["id"], "--to", str(out), check=False).returncode == 1
    repo.cli("restore", other["id"], "--to", str(out), "--restart", "--verify")
    assert sha(out) == sha(other_img) and not pfile.exists()

    # A damaged progress file is refused the same way.
    pfile.write_text("continuum restore progress 1\npoint nonsense\n")
    bad = repo.cli("restore", other["id"], "--to", str(out), check=False)
    assert bad.returncode == 1 and str(pfile) in bad.stderr and "--restart" in bad.stderr, bad.stderr
    pfile.unlink()


def progress_done_total(path: Path):
    for line in path.read_text().splitlines():
        if line.startswith("total "):
            return int(line.split()[1])
    raise AssertionError("no total in " + path.read_text())


def make_tree(root: Path):
    """~200 MiB in 400 files across directories, with metadata worth comparing."""
    root.mkdir()
    for d in range(8):
        sub = root / f"dir{d}"
        sub.mkdir()
        for i in range(50):
            f = sub / f"f{i:03}.bin"
            f.write_bytes(os.urandom(512 << 10))
            os.chmod(f, 0o600 + (i % 8))
            os.utime(f, ns=(1_600_000_000_000_000_000 + i, 1_600_000_000_000_000_000 + d * 1000 + i))
        os.symlink(f"f000.bin", sub / "link")
        os.link(sub / "f001.bin", sub / "hard")
        os.chmod(sub, 0o750)
        os.utime(sub, ns=(1_500_000_000_000_000_000 + d, 1_500_000_000_000_000_000 + d))
    (root / "empty").write_bytes(b"")


def assert_same_tree(a_root: Path, b_root: Path):
    compared = 0
    for dirpath, dirnames, filenames in os.walk(a_root):
        for name in dirnames + filenames:
            a = Path(dirpath) / name
            b = b_root / a.relative_to(a_root)
            sa, sb = os.lstat(a), os.lstat(b)
            for field in ("st_mode", "st_uid", "st_gid", "st_mtime_ns", "st_size"):
                assert getattr(sa, field) == getattr(sb, field), (a, field)
            if stat.S_ISREG(sa.st_mode):
                assert sha(a) == sha(b), a
            if stat.S_ISLNK(sa.st_mode):
                assert os.readlink(a) == os.readlink(b)
            compared += 1
    assert compared > 400
    for d in range(8):
        assert os.lstat(b_root / f"dir{d}" / "hard").st_ino == os.lstat(b_root / f"dir{d}" / "f001.bin").st_ino


def test_interrupted_tree_restore_resumes(repo, tmp_path):
    src = tmp_path / "data"
    make_tree(src)
    inodes = {f.stat().st_ino: f.stat().st_size for f in src.rglob("*") if f.is_file() and not f.is_symlink()}
    total = sum(inodes.values())
    point = repo.cli("backup", "path", str(src), json_out=True)

    out = tmp_path / "out"
    pfile = out / ".continuum-restore"
    recorded = kill_midway(start_restore(repo, point["id"], out), pfile)
    assert recorded > 0

    # Other --include patterns are another restore: refused.
    bad = repo.cli("restore", point["id"], "--to", str(out), "--include", "data/dir1/*", check=False)
    assert bad.returncode == 1 and str(pfile) in bad.stderr and "other options" in bad.stderr, bad.stderr

    res = repo.cli("restore", point["id"], "--to", str(out), "--verify", "--json")
    got = json.loads(res.stdout)
    assert f"resuming restore of {point['id'][:12]} at entry " in res.stderr, res.stderr
    assert got["resumed"] and got["bytes_resumed"] > 0, got
    assert got["bytes_written"] < total, (got, total)
    assert got["bytes_verified"] == total, (got, total)  # every file verified, resumed ones too
    assert not pfile.exists()
    assert_same_tree(src, out / "data")
    assert sorted(os.listdir(out)) == ["data"]
