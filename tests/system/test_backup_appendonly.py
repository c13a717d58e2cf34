"""Append-only repositories (issue 4): on a real ext4 filesystem every file that
is written once (config, keys, packs, index files, manifests, pins) is made
immutable, so not even root deletes it without `chattr -i`; forget and prune
refuse; backups keep adding files and restores work. A client that cannot set
the flag (no CAP_LINUX_IMMUTABLE) says so once and still works, and `repo check`
names the unprotected files. Loop devices and mounts are released even when a
test fails."""

import errno
import os
import stat
import subprocess
from pathlib import Path

import pytest

from conftest import BIN, run
from test_backup import Loops, Repo, sha

WRITE_ONCE_DIRS = ("keys", "data", "index", "manifests", "pins")


@pytest.fixture
def ext4(tmp_path):
    """A fresh 384 MiB ext4 on a loop device, mounted at tmp_path/fs."""
    lo = Loops()
    image = tmp_path / "fs.img"
    mnt = tmp_path / "fs"
    try:
        with open(image, "wb") as f:
            f.truncate(384 << 20)
        run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image)])
        dev = lo.attach(image)
        lo.mount(dev, mnt)
        yield mnt
    finally:
        # Files stay immutable inside the image; the image file itself is ordinary.
        lo.cleanup()


def write_once_files(repo_path: Path):
    out = [repo_path / "config"]
    for d in WRITE_ONCE_DIRS:
        out += [p for p in (repo_path / d).rglob("*") if p.is_file()]
    return sorted(out)


def immutable(path: Path) -> bool:
    flags = run(["lsattr", "-d", str(path)]).stdout.split()[0]
    return "i" in flags


def make_tree(root: Path, seed: int):
    root.mkdir(parents=True, exist_ok=True)
    (root / "sub").mkdir(exist_ok=True)
    (root / "a.bin").write_bytes(os.urandom(3 << 20))
    (root / "sub" / f"b{seed}.txt").write_text(f"version {seed}\n" * 5000)


def test_append_only_on_ext4_is_immutable_and_still_takes_backups(tmp_path, ext4):
    repo = Repo(tmp_path)
    repo.path = ext4 / "repo"
    repo.cli("repo", "init", "--append-only")
    assert immutable(repo.path / "config")
    assert all(immutable(k) for k in (repo.path / "keys").iterdir())

    src = tmp_path / "src"
    make_tree(src, 1)
    p1 = repo.cli("backup", "path", str(src), json_out=True)
    make_tree(src, 2)
    p2 = repo.cli("backup", "path", str(src), json_out=True)
    repo.cli("backup", "pin", p1["id"])

    files = write_once_files(repo.path)
    packs = [f for f in files if f.parent.parent.name == "data"]
    manifests = list((repo.path / "manifests").iterdir())
    assert len(packs) >= 2 and len(manifests) == 2 and list((repo.path / "pins").iterdir())
    mutable = [str(f) for f in files if not immutable(f)]
    assert mutable == [], mutable
    # Locks stay mutable (the lock of a finished command is gone).
    assert list((repo.path / "locks").iterdir()) == []

    # Not even root deletes or changes a pack or manifest.
    r = subprocess.run(["rm", "-f", str(packs[0])], capture_output=True, text=True)
    assert r.returncode != 0 and "Operation not permitted" in r.stderr, r
    with pytest.raises(PermissionError) as e:
        os.remove(manifests[0])
    assert e.value.errno == errno.EPERM
    with pytest.raises(PermissionError):
        open(packs[0], "r+b")
    assert packs[0].exists()

    # forget and prune refuse with a clear error; unpin too.
    f = repo.cli("forget", "--keep-last", "1", check=False)
    assert f.returncode == 1 and "append-only" in f.stderr, f.stderr
    pr = repo.cli("prune", check=False)
    assert pr.returncode == 1 and "append-only" in pr.stderr, pr.stderr
    up = repo.cli("backup", "unpin", p1["id"], check=False)
    assert up.returncode == 1 and "append-only" in up.stderr, up.stderr
    assert len(repo.cli("backup", "list", json_out=True)) == 2

    # A further backup adds files, and they are immutable too.
    make_tree(src, 3)
    p3 = repo.cli("backup", "path", str(src), json_out=True)
    after = write_once_files(repo.path)
    new = sorted(set(after) - set(files))
    assert new and all(immutable(f) for f in new), [(str(f), immutable(f)) for f in new]
    assert set(files) <= set(after)

    check = repo.cli("repo", "check", json_out=True)
    assert check["ok"]
    ao = check["append_only"]
    assert ao["immutability_supported"] and ao["mutable_files"] == 0 and ao["immutable_files"] == len(after), ao
    text = repo.cli("repo", "check").stdout
    assert f"append-only: {len(after)} files immutable, 0 lacking the immutable flag" in text, text

    # Restores work, byte- and mode-identical.
    out = tmp_path / "out"
    repo.cli("restore", p3["id"], "--to", str(out), "--verify")
    for rel in ("a.bin", "sub/b3.txt", "sub/b1.txt"):
        a, b = src / rel, out / "src" / rel
        assert sha(a) == sha(b), rel
        assert stat.S_IMODE(os.stat(a).st_mode) == stat.S_IMODE(os.stat(b).st_mode)
    old = tmp_path / "old"
    repo.cli("restore", p2["id"], "--to", str(old))
    assert not (old / "src" / "sub" / "b3.txt").exists() and (old / "src" / "sub" / "b2.txt").exists()

    # A flag cleared by hand is reported by name; repair leaves everything in place.
    run(["chattr", "-i", str(manifests[0])])
    check = repo.cli("repo", "check", json_out=True)
    assert check["append_only"]["mutable_files"] == 1
    assert check["append_only"]["mutable_file_names"] == [str(manifests[0])]
    assert f"not immutable: {manifests[0]}" in repo.cli("repo", "check").stdout
    # The operator's way to delete: chattr -i as root, then rm.
    os.remove(manifests[0])
    assert len(repo.cli("backup", "list", json_out=True)) == 2


def test_append_only_without_cap_linux_immutable_still_works(tmp_path, ext4):
    """A client without CAP_LINUX_IMMUTABLE cannot set the flag: it says so
    once, the repository works, and `repo check` names what is unprotected."""
    drop = ["setpriv", "--inh-caps=-linux_immutable", "--bounding-set=-linux_immutable", "--"]
    repo = Repo(tmp_path)
    repo.path = ext4 / "repo"
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTINUUM_")}
    creds = ["--repo", str(repo.path), "--password-file", str(repo.pwfile)]
    init = run(drop + [BIN, "repo", "init", "--append-only", *creds], env=env)
    assert init.stderr.count("cannot be made immutable") == 1, init.stderr
    assert "no CAP_LINUX_IMMUTABLE" in init.stderr
    img = tmp_path / "a.img"
    img.write_bytes(os.urandom(2 << 20))
    bk = run(drop + [BIN, "backup", "image", str(img), *creds], env=env)
    assert bk.stderr.count("cannot be made immutable") == 1, bk.stderr
    files = write_once_files(repo.path)
    assert files and not any(immutable(f) for f in files)

    check = repo.cli("repo", "check", json_out=True)
    ao = check["append_only"]
    assert check["ok"] and ao["immutability_supported"] and ao["immutable_files"] == 0
    assert ao["mutable_files"] == len(files), ao
    text = repo.cli("repo", "check").stdout
    assert f"append-only: 0 files immutable, {len(files)} lacking the immutable flag" in text, text
    # Clients still refuse to delete.
    pr = repo.cli("prune", check=False)
    assert pr.returncode == 1 and "append-only" in pr.stderr

    # Repair without the privilege rebuilds the index and says why it cannot flag;
    # repair as root flags what was left unprotected.
    rp = run(drop + [BIN, "--json", "repo", "repair", *creds], env=env)
    assert '"files_made_immutable": 0' in rp.stdout and "no CAP_LINUX_IMMUTABLE" in rp.stdout, rp.stdout
    rp = repo.cli("repo", "repair", json_out=True)
    assert rp["files_made_immutable"] >= len(files) and rp["immutability_problem"] == "", rp
    check = repo.cli("repo", "check", json_out=True)
    assert check["append_only"]["mutable_files"] == 0
    assert all(immutable(f) for f in write_once_files(repo.path))


def test_ordinary_repository_files_stay_mutable(tmp_path, ext4):
    repo = Repo(tmp_path)
    repo.path = ext4 / "repo"
    repo.cli("repo", "init")
    img = tmp_path / "a.img"
    img.write_bytes(os.urandom(1 << 20))
    repo.cli("backup", "image", str(img))
    assert not any(immutable(f) for f in write_once_files(repo.path))
    assert repo.cli("repo", "check", json_out=True)["append_only"] is None
