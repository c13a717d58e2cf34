"""Shared helpers for the Continuum benchmarks (standard library only).

Everything a benchmark sets up (agent, loop devices, mounts, postgres, files)
is registered on a Cleanup stack and torn down in reverse order from a
`finally`, also on Ctrl-C (KeyboardInterrupt) and SIGTERM/SIGHUP.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BIN = os.path.join(REPO, "build-bench", "continuum")
MiB = 1 << 20


class BenchError(Exception):
    pass


class Interrupted(BaseException):
    pass


def _on_signal(signum, _frame):
    raise Interrupted(f"signal {signal.Signals(signum).name}")


def install_signal_handlers():
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_size(text):
    m = re.fullmatch(r"(\d+)([KMGT]?)(i?B?)?", text.strip(), re.I)
    if not m:
        raise BenchError(f"bad size '{text}' (use e.g. 512M, 4G)")
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m.group(2).upper()]


def run(cmd, check=True, timeout=600, quiet=False, **kw):
    """Runs cmd (list); returns CompletedProcess with text output."""
    if not quiet:
        log("$ " + " ".join(cmd))
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired:
        raise BenchError(f"timed out after {timeout}s: {' '.join(cmd)}")
    except FileNotFoundError:
        raise BenchError(f"command not found: {cmd[0]}")
    if check and p.returncode != 0:
        raise BenchError(f"command failed (exit {p.returncode}): {' '.join(cmd)}\n"
                         f"{(p.stderr or p.stdout).strip()[-2000:]}")
    return p


class Cleanup:
    """LIFO stack of (description, callable); every step runs even if others fail."""

    def __init__(self):
        self.steps = []

    def push(self, desc, fn):
        self.steps.append((desc, fn))

    def run_all(self):
        # A second Ctrl-C during cleanup must not abort the remaining steps.
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            while self.steps:
                desc, fn = self.steps.pop()
                try:
                    fn()
                except BaseException as e:  # noqa: BLE001 - keep cleaning
                    log(f"cleanup: {desc} failed: {e}")
        finally:
            signal.signal(signal.SIGINT, old)


def require_root_and_tools(*tools):
    if os.geteuid() != 0:
        raise BenchError("run as root (needs losetup, mount and FUSE)")
    for t in tools:
        if shutil.which(t) is None and not os.path.exists(t):
            raise BenchError(f"required tool not found: {t}")


def find_binary(path):
    path = path or os.environ.get("CONTINUUM_BIN") or DEFAULT_BIN
    if not os.access(path, os.X_OK):
        raise BenchError(f"continuum binary not found at {path}; build it with\n"
                         f"  cmake -S {REPO} -B {REPO}/build-bench -DCMAKE_BUILD_TYPE=Release && "
                         f"cmake --build {REPO}/build-bench --target continuum -j2\n"
                         f"or pass --bin / set CONTINUUM_BIN")
    return os.path.abspath(path)


def make_run_dir(base, cleanup, prefix):
    os.makedirs(base, exist_ok=True)
    d = tempfile.mkdtemp(prefix=prefix, dir=base)
    os.chmod(d, 0o755)
    cleanup.push(f"remove {d}", lambda: shutil.rmtree(d, ignore_errors=True))
    return d


def make_sparse(path, size):
    with open(path, "wb") as f:
        f.truncate(size)


# ---------------------------------------------------------------- loop devices
def loop_attach(cleanup, path, direct_io=True):
    args = ["losetup", "--find", "--show"] + (["--direct-io=on"] if direct_io else []) + [path]
    dev = run(args).stdout.strip()
    cleanup.push(f"losetup -d {dev}", lambda: loop_detach(dev))
    if direct_io:
        flag = f"/sys/block/{os.path.basename(dev)}/loop/dio"
        if os.path.exists(flag) and open(flag).read().strip() != "1":
            log(f"warning: {dev} did not enable direct I/O")
    return dev


def loop_detach(dev):
    for _ in range(20):
        if run(["losetup", "-d", dev], check=False, quiet=True).returncode == 0:
            return
        time.sleep(0.5)
    raise BenchError(f"could not detach {dev}")


def mount(cleanup, dev, mnt):
    os.makedirs(mnt, exist_ok=True)
    run(["mount", "-o", "noatime", dev, mnt])
    cleanup.push(f"umount {mnt}", lambda: umount(mnt))


def umount(mnt):
    for _ in range(20):
        if not os.path.ismount(mnt):
            return
        if run(["umount", mnt], check=False, quiet=True).returncode == 0:
            return
        time.sleep(0.5)
    raise BenchError(f"could not unmount {mnt}")


# ---------------------------------------------------------------------- agent
class Agent:
    """One continuum agent with a private state dir, started in its own session
    so a terminal Ctrl-C reaches the benchmark (which cleans up), not the agent."""

    def __init__(self, binary, run_dir, cleanup, tag="agent"):
        self.bin = binary
        self.state = os.path.join(run_dir, f"{tag}-state")
        self.sock = os.path.join(self.state, "agent.sock")
        self.log_path = os.path.join(run_dir, f"{tag}.log")
        self.proc = None
        self.cleanup = cleanup
        self.peak = {}

    def start(self):
        logf = open(self.log_path, "w")
        self.proc = subprocess.Popen([self.bin, "agent", "--state-dir", self.state, "--control", self.sock],
                                     stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        logf.close()
        self.cleanup.push(f"stop agent pid {self.proc.pid}", self.stop)
        deadline = time.time() + 30
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"agent exited with {self.proc.returncode}:\n{self.log_tail()}")
            if os.path.exists(self.sock) and self.cli("volume", "status", check=False, quiet=True).returncode == 0:
                log(f"agent pid {self.proc.pid} ready (state {self.state})")
                return self
            time.sleep(0.1)
        raise BenchError(f"agent did not become ready in 30 s:\n{self.log_tail()}")

    def cli(self, *args, check=True, quiet=False, timeout=600):
        return run([self.bin, "--control", self.sock] + list(args), check=check, quiet=quiet, timeout=timeout)

    def status(self, name):
        return json.loads(self.cli("volume", "status", name, "--json", quiet=True).stdout)

    def create_up(self, cleanup, name, backing, size, extra=()):
        self.cli("volume", "create", name, "--backing", backing, "--size", str(size), *extra)
        dev = self.cli("volume", "up", name).stdout.strip()
        if not dev.startswith("/dev/"):
            raise BenchError(f"'volume up' printed '{dev}', expected a device path")
        cleanup.push(f"volume down {name}", lambda: self.cli("volume", "down", name, timeout=300))
        return dev

    def wait_applied(self, name, timeout=600):
        """Waits until every admitted write is applied; returns the seconds waited."""
        t0 = time.time()
        while True:
            s = self.status(name)
            if s.get("state") == "failed":
                raise BenchError(f"volume {name} failed: {s.get('error')}")
            if s.get("applied_seq", 0) >= s.get("last_seq", 0) and s.get("pending_bytes", 0) == 0:
                return time.time() - t0
            if time.time() - t0 > timeout:
                raise BenchError(f"volume {name} did not drain in {timeout}s: {s}")
            time.sleep(0.05)

    def mem(self):
        """{'rss': bytes, 'hwm': bytes} from /proc/PID/status (VmRSS, VmHWM)."""
        out = {}
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    k, _, v = line.partition(":")
                    if k in ("VmRSS", "VmHWM"):
                        out[k[2:].lower()] = int(v.split()[0]) * 1024
        except OSError:
            pass
        if out:
            self.peak = out
        return out

    def log_tail(self, n=30):
        try:
            with open(self.log_path) as f:
                return "".join(f.readlines()[-n:])
        except OSError:
            return "(no agent log)"

    def problems(self):
        """Agent log lines at warn level or above, plus notable events."""
        lines = []
        try:
            with open(self.log_path) as f:
                lines += [l.rstrip() for l in f if re.search(r" (warning|warn|error|critical) \[", l)]
        except OSError:
            pass
        routine = {"agent_started", "agent_stopped", "volume_created", "volume_up", "volume_down",
                   "volume_deleted", "bookmark_added", "view_opened", "view_closed"}
        try:
            with open(os.path.join(self.state, "events.jsonl")) as f:
                for l in f:
                    e = json.loads(l)
                    if e.get("kind") not in routine:
                        lines.append(f"event {e.get('kind')}: {e.get('volume')}: {e.get('message')}")
        except (OSError, ValueError):
            pass
        return lines

    def stop(self, timeout=300):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.mem()
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log(f"agent pid {self.proc.pid} ignored SIGTERM for {timeout}s; killing it")
            self.proc.kill()
            self.proc.wait()
            self._release_after_kill()
        if self.proc.returncode not in (0, -signal.SIGKILL):
            log(f"agent exited with {self.proc.returncode}; log tail:\n{self.log_tail()}")

    def _release_after_kill(self):
        # Only our own state dir: loops backed by our FUSE files, then the mount.
        fuse_dir = os.path.join(self.state, "dev") + "/"
        for n in os.listdir("/sys/block"):
            try:
                with open(f"/sys/block/{n}/loop/backing_file") as f:
                    if f.read().startswith(fuse_dir):
                        run(["losetup", "-d", f"/dev/{n}"], check=False)
            except OSError:
                pass
        run(["umount", "-l", fuse_dir.rstrip("/")], check=False)


# ------------------------------------------------------------------------ fio
def fio(dev, name, extra, runtime=None, timeout=900):
    args = ["fio", f"--name={name}", f"--filename={dev}", "--direct=1", "--ioengine=libaio",
            "--output-format=json", "--group_reporting"] + list(extra)
    if runtime:
        args += [f"--runtime={runtime}", "--time_based"]
    p = run(args, timeout=timeout)
    j = json.loads(p.stdout[p.stdout.index("{"):])
    job = j["jobs"][0]
    if job.get("error"):
        raise BenchError(f"fio {name} on {dev} reported error {job['error']}")
    w = job["write"]
    return {"mbps": w["bw_bytes"] / 1e6, "iops": w["iops"], "bytes": w["io_bytes"],
            "lat_us": w["lat_ns"]["mean"] / 1000.0,
            "p99_us": w["clat_ns"].get("percentile", {}).get("99.000000", 0) / 1000.0}


# --------------------------------------------------------------------- output
def table(headers, rows, title=None):
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    out = []
    if title:
        out.append(title)
    out.append("  ".join(h.ljust(w) for h, w in zip(headers, widths)))
    out.append("  ".join("-" * w for w in widths))
    for r in cells:
        out.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(out)


def verdict(value, target, higher_is_better=True):
    if value is None:
        return "n/a"
    ok = value >= target if higher_is_better else value <= target
    return "PASS" if ok else "FAIL"


def mib(n):
    return f"{n / MiB:.1f} MiB"


def main_wrapper(body):
    """Runs body(cleanup) with cleanup and clear error reporting; returns exit code."""
    install_signal_handlers()
    cleanup = Cleanup()
    code = 0
    try:
        body(cleanup)
    except BenchError as e:
        print(f"\nERROR: {e}", file=sys.stderr)
        code = 1
    except (KeyboardInterrupt, Interrupted) as e:
        print(f"\ninterrupted ({e or 'Ctrl-C'}); cleaning up", file=sys.stderr)
        code = 130
    except Exception as e:  # noqa: BLE001
        import traceback
        traceback.print_exc()
        print(f"\nERROR: unexpected {type(e).__name__}: {e}", file=sys.stderr)
        code = 1
    finally:
        cleanup.run_all()
    return code
