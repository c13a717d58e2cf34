"""Retention and a full journal, seen through the real device."""

import os
import time

from conftest import run


def write_mib(dev, n, seed=0):
    fd = os.open(dev, os.O_RDWR)
    try:
        for i in range(n):
            os.pwrite(fd, os.urandom(1 << 20), (i % 16) << 20)
            os.fsync(fd)
    finally:
        os.close(fd)


def test_size_limit_trims_oldest_and_status_shows_it(agent, tmp_path):
    agent.cli("volume", "create", "v", "--backing", str(tmp_path / "v.img"), "--size", "32M",
              "--journal-size", "16M")
    dev = agent.cli("volume", "up", "v").stdout.strip()
    agent.cli("bookmark", "add", "v", "early")
    write_mib(dev, 16)
    time.sleep(0.2)
    write_mib(dev, 40)
    time.sleep(1.5)  # a checkpoint enforces retention
    st = agent.cli("volume", "status", "v", json_out=True)
    assert st["journal_bytes"] <= 20 << 20
    assert st["oldest_point"]["seq"] > 0
    r = agent.cli("view", "open", "v", "--at", "seq:1", check=False)
    assert "before the oldest restorable point" in r.stderr
    assert st["oldest_point"]["time"] in r.stderr
    events = agent.cli("events", "--volume", "v", json_out=True)
    assert any(e["kind"] in ("journal_trimmed", "retention_shortened") for e in events)


def test_block_policy_refuses_writes_with_enospc(agent, tmp_path):
    agent.cli("volume", "create", "v", "--backing", str(tmp_path / "v.img"), "--size", "32M",
              "--journal-size", "16M", "--retention", "1h", "--on-full", "block")
    dev = agent.cli("volume", "up", "v").stdout.strip()
    agent.cli("bookmark", "add", "v", "keep-me")
    failed = None
    fd = os.open(dev, os.O_RDWR)
    try:
        for i in range(200):
            try:
                os.pwrite(fd, os.urandom(1 << 20), (i % 16) << 20)
                os.fsync(fd)
            except OSError as e:
                failed = e
                break
            if i % 10 == 0:
                time.sleep(0.2)
    finally:
        try:
            os.close(fd)
        except OSError:
            pass
    assert failed is not None, "writes were never refused with a full journal and policy block"
    st = agent.cli("volume", "status", "v", json_out=True)
    assert st["state"] == "blocked"
    # Nothing inside the retention window was trimmed.
    assert st["oldest_point"]["seq"] == 0
    assert agent.cli("view", "open", "v", "--at", "keep-me").returncode == 0
    events = agent.cli("events", "--volume", "v", json_out=True)
    assert any(e["kind"] == "journal_full" for e in events)
