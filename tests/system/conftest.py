"""Fixtures for system tests: a real `continuum agent` in a temp directory,
real loop devices and filesystems. Everything a test creates is cleaned up
(mounts, loop devices, processes by PID) even when the test fails."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BIN = os.environ.get("CONTINUUM_BIN", str(REPO / "build" / "continuum"))


def run(cmd, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise AssertionError(f"{cmd} failed ({r.returncode}): {r.stdout}\n{r.stderr}")
    return r


class Agent:
    def __init__(self, root: Path):
        self.root = root
        self.state = root / "state"
        self.sock = root / "agent.sock"
        self.log = root / "agent.log"
        self.proc = None
        self.mounts = []

    def start(self, extra=(), netns=None, server=False):
        self.logf = open(self.log, "a")
        prefix = ["ip", "netns", "exec", netns] if netns else []
        role = "server" if server else "agent"
        self.proc = subprocess.Popen(
            prefix + [BIN, role, "--state-dir", str(self.state), "--control", str(self.sock), *extra],
            stdout=self.logf, stderr=subprocess.STDOUT)
        deadline = time.time() + 15
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"agent exited with {self.proc.returncode}: {self.log.read_text()}")
            r = self.cli("volume", "status", check=False)
            if r.returncode == 0:
                return self
            time.sleep(0.1)
        raise AssertionError("agent did not start: " + self.log.read_text())

    def cli(self, *args, check=True, json_out=False, timeout=600):
        cmd = [BIN, "--control", str(self.sock)]
        if json_out:
            cmd.append("--json")
        r = run(cmd + list(args), check=check, timeout=timeout)
        if json_out and check:
            return json.loads(r.stdout)
        return r

    def our_loops(self):
        """Loop devices whose backing lives under this agent's root."""
        out = {}
        for sysdir in Path("/sys/block").glob("loop*"):
            try:
                backing = (sysdir / "loop" / "backing_file").read_text().strip()
            except OSError:
                continue
            if backing.startswith(str(self.root)):
                out["/dev/" + sysdir.name] = os.path.basename(backing)
        return out

    def kill9(self):
        # After a crash the devices' backing paths change (the dead FUSE mount
        # is detached); remember them so cleanup can still release them.
        if not hasattr(self, "known_loops"):
            self.known_loops = {}
        self.known_loops.update(self.our_loops())
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self, timeout=60):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError("agent did not stop on SIGTERM within %ds" % timeout)
        return self.proc.returncode if self.proc else None

    def mount(self, dev, where, opts=None):
        where = Path(where)
        where.mkdir(parents=True, exist_ok=True)
        cmd = ["mount"] + (["-o", opts] if opts else []) + [dev, str(where)]
        run(cmd)
        self.mounts.append(str(where))
        return where

    def umount(self, where):
        run(["umount", str(where)])
        if str(where) in self.mounts:
            self.mounts.remove(str(where))

    def cleanup(self):
        for m in reversed(self.mounts):
            subprocess.run(["umount", "-l", m], capture_output=True)
        self.mounts = []
        self.kill9()
        # Loop devices whose backing lives in our state dir (volumes, views),
        # and those a crash left pointing at a detached FUSE file.
        for dev in self.our_loops():
            subprocess.run(["losetup", "-d", dev], capture_output=True)
        for dev, base in getattr(self, "known_loops", {}).items():
            try:
                backing = Path(f"/sys/block/{Path(dev).name}/loop/backing_file").read_text().strip()
            except OSError:
                continue
            if os.path.basename(backing) == base:
                subprocess.run(["losetup", "-d", dev], capture_output=True)
        subprocess.run(["umount", "-l", str(self.state / "dev")], capture_output=True)
        if hasattr(self, "logf"):
            self.logf.close()


@pytest.fixture
def agent(tmp_path):
    a = Agent(tmp_path)
    try:
        yield a.start()
    finally:
        a.cleanup()


@pytest.fixture
def make_agent(tmp_path):
    created = []

    def factory(sub="a"):
        a = Agent(tmp_path / sub)
        a.root.mkdir(parents=True, exist_ok=True)
        created.append(a)
        return a
    try:
        yield factory
    finally:
        for a in created:
            a.cleanup()


@pytest.fixture
def clears_immutable(tmp_path):
    """For tests that make append-only repositories under tmp_path: their files get the
    immutable flag, which pytest could not remove; clear it afterwards."""
    yield tmp_path
    subprocess.run(["chattr", "-R", "-f", "-i", str(tmp_path)], check=False,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
