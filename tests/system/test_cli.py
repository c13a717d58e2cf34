"""CLI behaviour an operator meets first: help, finding the daemon, clear errors."""

import os
import subprocess

from conftest import BIN, run


def test_every_command_has_help():
    cmds = [[], ["agent"], ["volume"], ["volume", "create"], ["volume", "up"], ["volume", "down"],
            ["volume", "status"], ["volume", "export"], ["volume", "rollback"], ["volume", "restore"],
            ["bookmark"], ["bookmark", "add"], ["bookmark", "list"], ["bookmark", "schedule"],
            ["view"], ["view", "open"], ["view", "close"], ["events"], ["bitmap", "show"]]
    for c in cmds:
        r = run([BIN, *c, "--help"])
        assert "Usage" in r.stdout or "usage" in r.stdout.lower(), c


def test_no_daemon_says_how_to_start_one(tmp_path):
    r = run([BIN, "--control", str(tmp_path / "none.sock"), "volume", "status"], check=False)
    assert r.returncode == 3
    assert "no continuum daemon" in r.stderr
    assert "continuum agent" in r.stderr


def test_control_found_through_environment(agent):
    env = dict(os.environ, CONTINUUM_CONTROL=str(agent.sock))
    r = subprocess.run([BIN, "volume", "status", "--json"], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith("[")


def test_bad_sizes_and_durations_are_named(agent, tmp_path):
    r = agent.cli("volume", "create", "x", "--backing", str(tmp_path / "x.img"), "--size", "12Q", check=False)
    assert r.returncode != 0 and "12Q" in r.stderr
    r = agent.cli("volume", "create", "x", "--backing", str(tmp_path / "x.img"), "--size", "64M",
                  "--retention", "3y", check=False)
    assert r.returncode != 0 and "3y" in r.stderr


def test_unknown_volume_is_a_clear_error(agent):
    for args in (["volume", "up", "nope"], ["volume", "status", "nope"], ["bookmark", "list", "nope"],
                 ["view", "open", "nope", "--at", "seq:0"]):
        r = agent.cli(*args, check=False)
        assert r.returncode == 1, args
        assert "no volume 'nope'" in r.stderr, (args, r.stderr)


def test_json_errors_are_machine_readable(agent):
    r = agent.cli("volume", "status", "nope", check=False, json_out=True)
    import json
    j = json.loads(r.stdout)
    assert j["error"]["code"] == "not_found"


def test_second_agent_on_same_state_dir_is_refused(agent):
    r = run([BIN, "agent", "--state-dir", str(agent.state), "--control", str(agent.root / "other.sock")],
            check=False, timeout=20)
    assert r.returncode != 0
    assert "another continuum agent" in r.stderr
