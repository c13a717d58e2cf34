"""Instant mount of backup points (issue 4): `continuum mount` of image points
as block devices and of path points as directories, `view close`, `ls` inside
image points, all standalone (no daemon). Every mount a test makes is ended by
PID, and its loop devices and mounts released, even when the test fails."""

import hashlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, run

REGISTRY = Path("/run/continuum/mounts")


class Repo:
    def __init__(self, root: Path):
        self.root = root
        self.path = root / "repo"
        self.pwfile = root / "pw"
        self.pwfile.write_text("correct horse battery\n")

    def cli(self, *args, check=True, json_out=False, env=None, creds=True, timeout=600):
        cmd = [BIN] + (["--json"] if json_out else []) + list(args)
        if creds:
            cmd += ["--repo", str(self.path), "--password-file", str(self.pwfile)]
        full_env = {k: v for k, v in os.environ.items() if not k.startswith("CONTINUUM_")}
        full_env.update(env or {})
        r = run(cmd, check=check, env=full_env, timeout=timeout)
        if json_out and check:
            return json.loads(r.stdout)
        return r


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def loop_attached(dev):
    return Path(f"/sys/block/{Path(dev).name}/loop/backing_file").exists()


def is_mounted(path):
    return subprocess.run(["findmnt", "-M", str(path)], capture_output=True).returncode == 0


class Mounts:
    """Repo mounts, filesystem mounts and loop devices of one test."""

    def __init__(self, repo):
        self.repo = repo
        self.records, self.fs_mounts = [], []

    def mount(self, *args, check=True):
        t0 = time.monotonic()
        r = self.repo.cli("mount", *args, check=False, json_out=True)
        elapsed = time.monotonic() - t0
        if r.returncode == 0:
            rec = json.loads(r.stdout)
            self.records.append(rec)
            return rec, elapsed
        if check:
            raise AssertionError(f"mount failed: {r.stdout} {r.stderr}")
        r.stderr = r.stderr + r.stdout  # --json puts the error object on stdout
        return r, elapsed

    def mount_fs(self, dev, where, opts="ro"):
        where.mkdir(parents=True, exist_ok=True)
        run(["mount", "-o", opts, dev, str(where)])
        self.fs_mounts.append(str(where))

    def umount_fs(self, where):
        run(["umount", str(where)])
        self.fs_mounts.remove(str(where))

    def cleanup(self):
        for m in reversed(self.fs_mounts):
            subprocess.run(["umount", "-l", m], capture_output=True)
        for rec in self.records:
            pid = rec["pid"]
            if alive(pid):
                os.kill(pid, signal.SIGTERM)
                for _ in range(200):
                    if not alive(pid):
                        break
                    time.sleep(0.05)
                if alive(pid):
                    os.kill(pid, signal.SIGKILL)
            if rec.get("device") and loop_attached(rec["device"]):
                subprocess.run(["losetup", "-d", rec["device"]], capture_output=True)
            if rec.get("mountpoint") and is_mounted(rec["mountpoint"]):
                subprocess.run(["umount", "-l", rec["mountpoint"]], capture_output=True)
            (REGISTRY / (rec["id"] + ".json")).unlink(missing_ok=True)


@pytest.fixture
def repo(tmp_path):
    r = Repo(tmp_path)
    r.cli("repo", "init")
    return r


@pytest.fixture
def mounts(repo):
    m = Mounts(repo)
    try:
        yield m
    finally:
        m.cleanup()


def sha(path, length=None):
    h = hashlib.sha256()
    left = length
    with open(path, "rb") as f:
        while left is None or left > 0:
            block = f.read(1 << 20 if left is None else min(1 << 20, left))
            if not block:
                break
            h.update(block)
            if left is not None:
                left -= len(block)
    return h.hexdigest()


FILES = {"etc/hosts": b"127.0.0.1 localhost\n", "data/big.bin": os.urandom(3 << 20), "empty": b""}


@pytest.fixture
def ext4_point(repo, tmp_path):
    """A 64 MiB ext4 image with a few files, backed up as an image point."""
    image = tmp_path / "disk.img"
    with open(image, "wb") as f:
        f.truncate(64 << 20)
    run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image)])
    dev = run(["losetup", "--find", "--show", str(image)]).stdout.strip()
    mnt = tmp_path / "src-mnt"
    mnt.mkdir()
    try:
        run(["mount", dev, str(mnt)])
        try:
            for rel, data in FILES.items():
                p = mnt / rel
                p.parent.mkdir(parents=True, exist_ok=True)
                p.write_bytes(data)
        finally:
            run(["umount", str(mnt)])
    finally:
        run(["losetup", "-d", dev])
    point = repo.cli("backup", "image", str(image), json_out=True)
    return image, point["id"]


def check_files(root: Path):
    for rel, data in FILES.items():
        assert (root / rel).read_bytes() == data, rel


def test_image_mount_reads_the_point_and_view_close_removes_everything(repo, mounts, ext4_point, tmp_path):
    image, pid_ = ext4_point
    rec, elapsed = mounts.mount(pid_[:12])
    assert elapsed < 5, f"mount took {elapsed:.2f} s"
    dev = rec["device"]
    assert dev.startswith("/dev/loop") and rec["kind"] == "image" and not rec["writable"]
    assert alive(rec["pid"]) and (REGISTRY / (rec["id"] + ".json")).exists()
    # The device is the image, byte for byte, and read-only.
    assert sha(dev) == sha(image)
    assert run(["blockdev", "--getro", dev]).stdout.strip() == "1"
    w = subprocess.run(["dd", "if=/dev/zero", f"of={dev}", "bs=4096", "count=1", "oflag=direct"],
                       capture_output=True)
    assert w.returncode != 0
    mnt = tmp_path / "view"
    mounts.mount_fs(dev, mnt, "ro,noload")
    check_files(mnt)
    # Closing while the filesystem is mounted is refused and changes nothing.
    r = repo.cli("view", "close", dev, creds=False, check=False)
    assert r.returncode == 1 and "busy" in r.stderr
    assert alive(rec["pid"]) and loop_attached(dev)
    mounts.umount_fs(mnt)
    r = repo.cli("view", "close", dev, creds=False)
    assert f"closed {dev}" in r.stdout
    assert not loop_attached(dev)
    assert not alive(rec["pid"])
    assert not (REGISTRY / (rec["id"] + ".json")).exists()
    assert not is_mounted(rec["mountpoint"])


def test_writable_mount_never_changes_the_repository(repo, mounts, ext4_point, tmp_path):
    image, point = ext4_point
    before = sha(image)
    rec, _ = mounts.mount(point, "--writable")
    dev = rec["device"]
    assert rec["writable"]
    mnt = tmp_path / "rw"
    mounts.mount_fs(dev, mnt, "rw")
    (mnt / "new.txt").write_bytes(b"written through the overlay\n")
    (mnt / "etc/hosts").write_bytes(b"changed\n")
    os.sync()
    mounts.umount_fs(mnt)
    mounts.mount_fs(dev, mnt, "ro")
    assert (mnt / "new.txt").read_bytes() == b"written through the overlay\n"
    mounts.umount_fs(mnt)
    repo.cli("view", "close", dev, creds=False)
    assert not loop_attached(dev) and not alive(rec["pid"])
    # The repository still holds the original point, intact.
    assert repo.cli("repo", "check", "--read-data").returncode == 0
    assert [p["id"] for p in repo.cli("backup", "list", json_out=True)] == [point]
    rec2, _ = mounts.mount(point)
    assert sha(rec2["device"]) == before
    repo.cli("view", "close", rec2["device"], creds=False)


def test_ls_lists_files_inside_an_image_point(repo, ext4_point):
    _, point = ext4_point
    listing = repo.cli("ls", point, json_out=True)
    by_path = {e["path"]: e for e in listing}
    assert by_path["etc"]["type"] == "dir"
    assert by_path["data/big.bin"]["size"] == len(FILES["data/big.bin"])
    assert by_path["etc/hosts"]["type"] == "file"
    assert "lost+found" in by_path
    sub = repo.cli("ls", point, "data", json_out=True)
    assert [e["path"] for e in sub] == ["data", "data/big.bin"]
    r = repo.cli("ls", point, "nope", check=False)
    assert r.returncode == 1 and "nope" in r.stderr
    # Nothing is left behind: no loop device over a continuum FUSE file.
    loops = run(["losetup", "-a"]).stdout
    assert "continuum-ls" not in loops


def make_tree(src: Path):
    (src / "dir" / "deep").mkdir(parents=True)
    (src / "dir" / "deep" / "file.txt").write_bytes(b"deep file\n")
    (src / "big.bin").write_bytes(os.urandom(2 << 20) + bytes(1 << 20) + os.urandom(12345))
    (src / "secret").write_bytes(b"mode 600\n")
    os.chmod(src / "secret", 0o600)
    os.chown(src / "secret", 1234, 5678)
    os.symlink("dir/deep/file.txt", src / "link")
    os.link(src / "big.bin", src / "dir" / "hard.bin")
    os.utime(src / "dir" / "deep" / "file.txt", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))


def test_path_mount_shows_the_tree_as_recorded(repo, mounts, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    make_tree(src)
    point = repo.cli("backup", "path", str(src), json_out=True)["id"]
    at = tmp_path / "browse"
    at.mkdir()
    rec, elapsed = mounts.mount(point, "--at", str(at))
    assert elapsed < 5
    assert rec["kind"] == "path" and rec["mountpoint"] == str(at) and is_mounted(at)
    root = at / "src"
    for rel in ["dir/deep/file.txt", "big.bin", "secret", "dir/hard.bin"]:
        a, b = os.lstat(src / rel), os.lstat(root / rel)
        assert (a.st_mode, a.st_uid, a.st_gid, a.st_size, a.st_mtime_ns) == \
               (b.st_mode, b.st_uid, b.st_gid, b.st_size, b.st_mtime_ns), rel
        assert sha(src / rel) == sha(root / rel), rel
    assert os.readlink(root / "link") == "dir/deep/file.txt"
    assert (root / "link").read_bytes() == b"deep file\n"
    assert os.lstat(root / "big.bin").st_ino == os.lstat(root / "dir" / "hard.bin").st_ino
    assert sorted(os.listdir(root)) == sorted(os.listdir(src))
    # Read-only: nothing can be created or changed.
    with pytest.raises(OSError) as e:
        (root / "new").write_bytes(b"x")
    assert e.value.errno == 30  # EROFS
    with pytest.raises(OSError):
        (root / "secret").write_bytes(b"x")
    # Mounting at the same directory again is refused.
    r, _ = mounts.mount(point, "--at", str(at), check=False)
    assert r.returncode == 1 and "already mounted" in r.stderr
    # A file open under DIR keeps the mount: close is refused and changes nothing.
    with open(root / "big.bin", "rb") as busy:
        r = repo.cli("view", "close", str(at), creds=False, check=False)
        assert r.returncode == 1 and "busy" in r.stderr
        assert is_mounted(at) and alive(rec["pid"])
        assert busy.read(10) == (src / "big.bin").read_bytes()[:10]
    repo.cli("view", "close", str(at), creds=False)
    assert not is_mounted(at) and not alive(rec["pid"])
    assert not (REGISTRY / (rec["id"] + ".json")).exists()


def test_mount_errors_are_clear(repo, mounts, tmp_path, ext4_point):
    _, image_point = ext4_point
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x")
    path_point = repo.cli("backup", "path", str(src), json_out=True)["id"]
    r, _ = mounts.mount("deadbeef", check=False)
    assert r.returncode == 1 and "deadbeef" in r.stderr
    bad = tmp_path / "bad"
    bad.write_text("wrong\n")
    r = run([BIN, "mount", image_point, "--repo", str(repo.path), "--password-file", str(bad)], check=False)
    assert r.returncode == 1 and "wrong password" in r.stderr
    r = run([BIN, "mount", image_point, "--repo", str(repo.path)], check=False,
            env={k: v for k, v in os.environ.items() if not k.startswith("CONTINUUM_")})
    assert r.returncode == 2 and "--password-file" in r.stderr
    r, _ = mounts.mount(path_point, "--at", str(tmp_path / "missing"), check=False)
    assert r.returncode == 1 and "does not exist" in r.stderr
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    r, _ = mounts.mount(path_point, "--at", str(full), check=False)
    assert r.returncode == 1 and "not empty" in r.stderr
    r, _ = mounts.mount(path_point, check=False)
    assert r.returncode == 1 and "--at" in r.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    r, _ = mounts.mount(image_point, "--at", str(empty), check=False)
    assert r.returncode == 1 and "image point" in r.stderr
    assert mounts.records == []
    # Not a repo mount: view close asks the agent (none runs here).
    r = repo.cli("view", "close", "/dev/loop-nothing", creds=False, check=False,
                 env={"CONTINUUM_CONTROL": str(tmp_path / "no-agent.sock")})
    assert r.returncode != 0 and r.returncode != 1


def test_mount_holds_a_shared_lock_that_stops_prune(repo, mounts, ext4_point):
    _, point = ext4_point
    rec, _ = mounts.mount(point)
    # A backup can run next to the mount; prune cannot (it would delete data
    # under the mount), and says who holds the repository.
    r = repo.cli("prune", check=False)
    assert r.returncode == 1 and f"pid {rec['pid']}" in r.stderr
    repo.cli("view", "close", rec["device"], creds=False)
    assert repo.cli("prune").returncode == 0


def test_sigterm_ends_the_mount_cleanly_and_stale_entries_are_cleaned(repo, mounts, ext4_point):
    _, point = ext4_point
    rec, _ = mounts.mount(point)
    os.kill(rec["pid"], signal.SIGTERM)
    for _ in range(200):
        if not alive(rec["pid"]):
            break
        time.sleep(0.05)
    assert not alive(rec["pid"])
    assert not loop_attached(rec["device"])
    assert not (REGISTRY / (rec["id"] + ".json")).exists()
    assert not is_mounted(rec["mountpoint"])
    # A server killed outright leaves an entry; view close of its device cleans it up.
    rec2, _ = mounts.mount(point)
    os.kill(rec2["pid"], signal.SIGKILL)
    for _ in range(200):
        if not alive(rec2["pid"]):
            break
        time.sleep(0.05)
    r = repo.cli("view", "close", rec2["device"], creds=False)
    assert r.returncode == 0
    assert not loop_attached(rec2["device"])
    assert not (REGISTRY / (rec2["id"] + ".json")).exists()


def test_environment_stands_in_for_repo_and_password(repo, mounts, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello").write_bytes(b"hello\n")
    point = repo.cli("backup", "path", str(src), json_out=True)["id"]
    at = tmp_path / "at"
    at.mkdir()
    env = {"CONTINUUM_REPO": str(repo.path), "CONTINUUM_PASSWORD": repo.pwfile.read_text().rstrip("\n")}
    r = repo.cli("--json", "mount", "latest", "--at", str(at), creds=False, env=env)
    rec = json.loads(r.stdout)
    mounts.records.append(rec)
    assert rec["point"] == point
    assert (at / "src" / "hello").read_bytes() == b"hello\n"
    repo.cli("view", "close", str(at) + "/", creds=False)
    assert not is_mounted(at) and not alive(rec["pid"])
