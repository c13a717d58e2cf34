"""Retention and space reclaim (issue 4): backup pin/unpin, forget with keep
rules per source, prune (also killed with SIGKILL at random moments), and ls of
path points, driven through the real binary with no daemon."""

import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import BIN, run
from test_backup import Repo, sha


@pytest.fixture
def repo(tmp_path):
    r = Repo(tmp_path)
    r.cli("repo", "init")
    return r


def data_bytes(repo):
    return sum(f.stat().st_size for f in (repo.path / "data").rglob("*") if f.is_file())


def image_point(repo, tmp_path, name, size, keep_bytes=None):
    """Backs up a random image; returns (point, sha256 of the image)."""
    img = tmp_path / name
    img.write_bytes(keep_bytes if keep_bytes is not None else os.urandom(size))
    return repo.cli("backup", "image", str(img), json_out=True), sha(img)


def assert_restores(repo, tmp_path, point_id, want_sha):
    out = tmp_path / f"restored-{point_id[:12]}.img"
    repo.cli("restore", point_id, "--to", str(out), "--verify")
    assert sha(out) == want_sha
    out.unlink()


def assert_check_clean(repo):
    r = repo.cli("repo", "check", "--read-data", check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "no problems found" in r.stdout


def test_pin_and_unpin_show_in_list(repo, tmp_path):
    p1, _ = image_point(repo, tmp_path, "a.img", 1 << 20)
    p2, _ = image_point(repo, tmp_path, "a.img", 1 << 20)
    out = repo.cli("backup", "pin", p1["id"][:8])
    assert f"pinned point {p1['id'][:12]}" in out.stdout
    listed = repo.cli("backup", "list", json_out=True)
    assert [(p["id"], p["pinned"]) for p in listed] == [(p1["id"], True), (p2["id"], False)]
    human = repo.cli("backup", "list").stdout.splitlines()
    assert "PIN" in human[0]
    assert human[1].startswith(p1["id"][:12]) and " * " in human[1]
    # Pinning keeps the point's id (the pin is a file of its own).
    repo.cli("backup", "pin", p1["id"])
    repo.cli("backup", "unpin", p1["id"])
    assert not any(p["pinned"] for p in repo.cli("backup", "list", json_out=True))
    bad = repo.cli("backup", "pin", "abcdef0123", check=False)
    assert bad.returncode == 1 and "no point abcdef0123" in bad.stderr


def test_forget_keeps_pinned_points_and_dry_run_changes_nothing(repo, tmp_path):
    points = []
    for i in range(4):
        p, h = image_point(repo, tmp_path, "a.img", 2 << 20)
        points.append((p, h))
    other, other_sha = image_point(repo, tmp_path, "b.img", 1 << 20)  # another source: its own group
    repo.cli("backup", "pin", points[0][0]["id"])

    none = repo.cli("forget", check=False)
    assert none.returncode == 2 and "no keep rule" in none.stderr

    dry = repo.cli("forget", "--keep-last", "1", "--dry-run")
    assert "would remove" in dry.stdout and "dry run" in dry.stdout
    assert len(repo.cli("backup", "list", json_out=True)) == 5
    dry_json = repo.cli("forget", "--keep-last", "1", "--dry-run", json_out=True)
    gone = {d["id"] for d in dry_json["points"] if not d["keep"]}
    assert gone == {points[1][0]["id"], points[2][0]["id"]}
    pinned = [d for d in dry_json["points"] if d["id"] == points[0][0]["id"]][0]
    assert pinned["keep"] and pinned["reasons"] == ["pinned"]

    res = repo.cli("forget", "--keep-last", "1", json_out=True)
    assert res["removed"] == 2
    left = repo.cli("backup", "list", json_out=True)
    assert [p["id"] for p in left] == [points[0][0]["id"], points[3][0]["id"], other["id"]]
    assert left[0]["pinned"]

    bad = repo.cli("forget", "--keep-within", "3x", check=False)
    assert bad.returncode == 2 and "unknown duration unit" in bad.stderr


def test_forget_refuses_in_append_only_repositories(tmp_path, clears_immutable):
    repo = Repo(tmp_path)
    repo.cli("repo", "init", "--append-only")
    image_point(repo, tmp_path, "a.img", 1 << 20)
    image_point(repo, tmp_path, "a.img", 1 << 20)
    r = repo.cli("forget", "--keep-last", "1", check=False)
    assert r.returncode == 1 and "append-only" in r.stderr and "cannot remove points" in r.stderr
    assert len(repo.cli("backup", "list", json_out=True)) == 2
    p = repo.cli("prune", check=False)
    assert p.returncode == 1 and "append-only" in p.stderr
    # A dry run only reads: allowed.
    assert "would remove" in repo.cli("forget", "--keep-last", "1", "--dry-run").stdout


def test_prune_frees_space_and_remaining_points_restore(repo, tmp_path):
    base = os.urandom(8 << 20)
    kept = []
    # Points share half their data: pruning the older ones leaves packs partly used.
    for i in range(4):
        data = base[: 4 << 20] + os.urandom(4 << 20)
        p, h = image_point(repo, tmp_path, "a.img", 0, keep_bytes=data)
        kept.append((p, h))
    repo.cli("backup", "pin", kept[0][0]["id"])
    before = data_bytes(repo)
    repo.cli("forget", "--keep-last", "1")
    dry = repo.cli("prune", "--dry-run", json_out=True)
    assert dry["dry_run"] and dry["bytes_freed"] > 0
    assert data_bytes(repo) == before

    rep = repo.cli("prune", json_out=True)
    after = data_bytes(repo)
    assert rep["bytes_freed"] >= 7 << 20, rep  # two points' unique 4 MiB, less packing slack
    assert before - after == rep["bytes_freed"], (before, after, rep)
    assert_check_clean(repo)
    for p, h in (kept[0], kept[3]):
        assert_restores(repo, tmp_path, p["id"], h)
    human = repo.cli("prune").stdout
    assert "freed 0 B" in human


def test_forget_with_prune_and_path_points(repo, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "sub" / "keep.txt").write_text("kept\n")
    for i in range(3):
        (src / "big").write_bytes(os.urandom(3 << 20))
        repo.cli("backup", "path", str(src))
    want = (src / "big").read_bytes()
    before = data_bytes(repo)
    out = repo.cli("forget", "--keep-last", "1", "--prune").stdout
    assert "removed 2" in out and "freed" in out
    assert data_bytes(repo) < before - (5 << 20)
    assert_check_clean(repo)
    dest = tmp_path / "dest"
    repo.cli("restore", "latest", "--to", str(dest), "--verify")
    assert (dest / "src" / "big").read_bytes() == want
    assert (dest / "src" / "sub" / "keep.txt").read_text() == "kept\n"


def test_ls_lists_entries_of_path_points(repo, tmp_path):
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_bytes(b"x" * 1234)
    (src / "sub" / "b").write_bytes(b"")
    os.chmod(src / "a.txt", 0o640)
    os.utime(src / "a.txt", (1700000000, 1700000000))
    os.symlink("a.txt", src / "link")
    p = repo.cli("backup", "path", str(src), json_out=True)

    lines = repo.cli("ls", p["id"]).stdout.splitlines()
    assert [l.split()[-1] for l in lines] == ["tree", "tree/a.txt", "a.txt", "tree/sub", "tree/sub/b"]
    a = [l for l in lines if l.endswith("tree/a.txt")][0].split()
    assert a[0] == "-rw-r-----" and a[3] == "1234" and a[4].startswith("2023-11-14T22:13:20")
    assert lines[2].startswith("l") and "tree/link -> a.txt" in lines[2]

    sub = repo.cli("ls", "latest", "tree/sub", json_out=True)
    assert [(e["path"], e["type"]) for e in sub] == [("tree/sub", "dir"), ("tree/sub/b", "file")]
    missing = repo.cli("ls", "latest", "tree/nope", check=False)
    assert missing.returncode == 1 and "no 'tree/nope'" in missing.stderr

    img, _ = image_point(repo, tmp_path, "x.img", 1 << 20)
    r = repo.cli("ls", img["id"], check=False)
    assert r.returncode == 1 and "image point" in r.stderr


def test_kill_dash_nine_during_prune_leaves_a_consistent_repository(repo, tmp_path):
    rng = random.Random(4)
    shared = os.urandom(6 << 20)
    pinned, pinned_sha = image_point(repo, tmp_path, "a.img", 0, keep_bytes=shared + os.urandom(6 << 20))
    repo.cli("backup", "pin", pinned["id"])
    killed = 0
    for it in range(8):
        # New garbage each round: two points, the older one forgotten.
        for _ in range(2):
            latest, latest_sha = image_point(repo, tmp_path, "a.img", 0, keep_bytes=shared + os.urandom(6 << 20))
        repo.cli("forget", "--keep-last", "1")
        cmd = [BIN, "prune", "--repo", str(repo.path), "--password-file", str(repo.pwfile)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTINUUM_")}
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        time.sleep(rng.uniform(0.0, 0.25))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            killed += 1
        proc.wait()
        # Whatever moment it died at: every point restores and check is clean
        # (the dead prune's lock is stale: its pid is gone).
        assert_check_clean(repo)
        assert_restores(repo, tmp_path, pinned["id"], pinned_sha)
        assert_restores(repo, tmp_path, latest["id"], latest_sha)
    assert killed > 0
    rep = repo.cli("prune", json_out=True)
    assert rep["points"] == 2
    assert_check_clean(repo)
    assert_restores(repo, tmp_path, latest["id"], latest_sha)
