"""Shared helpers for the Continuum benchmarks (standard library only). Everything a benchmark
sets up is pushed on a Cleanup stack, torn down in reverse order also on Ctrl-C and SIGTERM/SIGHUP."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_BIN = os.path.join(REPO, "build-bench", "continuum")
MiB = 1 << 20


class BenchError(Exception):
    """A failure with a message for the user."""


class Interrupted(BaseException):
    """SIGTERM/SIGHUP: unwinds like Ctrl-C so every `finally` cleans up."""


def _on_signal(signum, _frame):
    raise Interrupted(f"signal {signal.Signals(signum).name}")


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def parse_size(text):
    if not (m := re.fullmatch(r"(\d+)([KMGT]?)(i?B?)?", text.strip(), re.I)):
        raise BenchError(f"bad size '{text}' (use e.g. 512M, 4G)")
    return int(m.group(1)) << {"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[m.group(2).upper()]


def run(cmd, check=True, timeout=600, quiet=False, **kw):
    quiet or log("$ " + " ".join(cmd))
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except (subprocess.TimeoutExpired, FileNotFoundError) as e:
        raise BenchError(f"{' '.join(cmd)}: {e}")
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
        # A second Ctrl-C or SIGTERM during cleanup must not abort the remaining steps.
        old = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while self.steps:
                desc, fn = self.steps.pop()
                try:
                    fn()
                except BaseException as e:  # noqa: BLE001 - keep cleaning
                    log(f"cleanup: {desc} failed: {e}")
        finally:
            for s, h in old.items():
                signal.signal(s, h)


def require_root_and_tools(*tools):
    if os.geteuid() != 0:
        raise BenchError("run as root (needs losetup, mount and FUSE)")
    if missing := [t for t in tools if shutil.which(t) is None]:
        raise BenchError(f"required tools not found: {' '.join(missing)}")


def find_binary(path):
    path = path or os.environ.get("CONTINUUM_BIN") or DEFAULT_BIN
    if not os.access(path, os.X_OK):
        raise BenchError(f"no continuum binary at {path} (pass --bin or set CONTINUUM_BIN); build it: cmake -S "
                         f"{REPO} -B {REPO}/build-bench -DCMAKE_BUILD_TYPE=Release && cmake --build "
                         f"{REPO}/build-bench --target continuum -j2")
    return os.path.abspath(path)


def read_lines(path):
    try:
        with open(path) as f:
            return f.readlines()
    except OSError:
        return []


def make_run_dir(base, cleanup, prefix):
    os.makedirs(base, exist_ok=True)
    d = tempfile.mkdtemp(prefix=prefix, dir=base)
    os.chmod(d, 0o755)
    cleanup.push(f"remove {d}", lambda: shutil.rmtree(d, ignore_errors=True))
    return d


def make_sparse(path, size):
    open(path, "wb").close()
    os.truncate(path, size)


def make_filled(path, size):
    """Fully allocated random data (fio, direct): overwrites then journal real before-images."""
    make_sparse(path, size)
    fio(path, "prefill", ["--rw=write", "--bs=1M", "--iodepth=8", f"--size={size}", "--refill_buffers"])


def loop_attach(cleanup, path, direct_io=True):
    args = ["losetup", "--find", "--show"] + (["--direct-io=on"] if direct_io else []) + [path]
    dev = run(args).stdout.strip()
    cleanup.push(f"losetup -d {dev}", lambda: retry(["losetup", "-d", dev]))
    if direct_io and read_lines(f"/sys/block/{os.path.basename(dev)}/loop/dio") != ["1\n"]:
        log(f"warning: {dev} did not enable direct I/O")
    return dev


def retry(cmd, done=lambda: False, tries=20):
    """Runs cmd until it succeeds (or done() is true), e.g. while udev still holds a device."""
    for _ in range(tries):
        if done() or run(cmd, check=False, quiet=True).returncode == 0:
            return
        time.sleep(0.5)
    raise BenchError(f"gave up after {tries} tries: {' '.join(cmd)}")


def mount_tmpfs(cleanup, mnt, size):
    """A RAM file system at mnt (removed by the cleanup stack)."""
    os.makedirs(mnt, exist_ok=True)
    run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", mnt])
    cleanup.push(f"umount {mnt}", lambda: retry(["umount", mnt], done=lambda: not os.path.ismount(mnt)))


def mount(cleanup, dev, mnt):
    os.makedirs(mnt, exist_ok=True)
    run(["mount", "-o", "noatime", dev, mnt])
    cleanup.push(f"umount {mnt}", lambda: retry(["umount", mnt], done=lambda: not os.path.ismount(mnt)))


class Agent:
    """A private agent, in its own session: a terminal Ctrl-C reaches only the benchmark."""

    def __init__(self, binary, run_dir, cleanup, tag="agent", role="agent", netns=None, args=()):
        """role "server" starts a DR-site `continuum server`; netns runs it inside that network
        namespace (`ip netns exec` execs, so the PID is continuum's own); args are appended."""
        self.bin, self.cleanup, self.proc, self.peak = binary, cleanup, None, {}
        self.role, self.netns, self.args = role, netns, list(args)
        self.state = os.path.join(run_dir, f"{tag}-state")
        self.sock = os.path.join(self.state, "agent.sock")
        self.log_path = os.path.join(run_dir, f"{tag}.log")

    def start(self):
        prefix = ["ip", "netns", "exec", self.netns] if self.netns else []
        with open(self.log_path, "a") as logf:
            self.proc = subprocess.Popen(prefix + [self.bin, self.role, "--state-dir", self.state,
                                                   "--control", self.sock] + self.args,
                                         stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
        self.cleanup.push(f"stop agent pid {self.proc.pid}", self.stop)
        for _ in range(300):
            if self.proc.poll() is not None:
                raise BenchError(f"agent exited with {self.proc.returncode}:\n{self.log_tail()}")
            if os.path.exists(self.sock) and self.cli("volume", "status", check=False, quiet=True).returncode == 0:
                log(f"{self.role} pid {self.proc.pid} ready (state {self.state})")
                return self
            time.sleep(0.1)
        raise BenchError(f"agent did not become ready in 30 s:\n{self.log_tail()}")

    def cli(self, *args, check=True, quiet=False, timeout=600):
        return run([self.bin, "--control", self.sock] + list(args), check=check, quiet=quiet, timeout=timeout)

    def json(self, *args):
        return json.loads(self.cli(*args, "--json", quiet=True).stdout)

    def status(self, name):
        return json.loads(self.cli("volume", "status", name, "--json", quiet=True).stdout)

    def create_up(self, cleanup, name, backing, size, extra=()):
        self.cli("volume", "create", name, "--backing", backing, "--size", str(size), *extra)
        if not (dev := self.cli("volume", "up", name).stdout.strip()).startswith("/dev/"):
            raise BenchError(f"'volume up' printed '{dev}', expected a device path")
        cleanup.push(f"volume down {name}", lambda: self.cli("volume", "down", name, timeout=300))
        return dev

    def wait_applied(self, name, timeout=600):
        """Waits until every admitted write is applied; returns the seconds waited."""
        t0 = time.time()
        # pending_bytes is the replication write cache (data a target has not
        # acknowledged), not unapplied writes: only the seqs say "applied".
        while (s := self.status(name)).get("applied_seq", 0) < s.get("last_seq", 0):
            if s.get("state") == "failed" or time.time() - t0 > timeout:
                raise BenchError(f"volume {name} did not drain in {time.time() - t0:.0f}s: {s}")
            time.sleep(0.05)
        return time.time() - t0

    def mem(self):
        """{'rss': bytes, 'hwm': bytes} from /proc/PID/status (VmRSS, VmHWM)."""
        lines = read_lines(f"/proc/{self.proc.pid}/status")
        out = {l[2:5].lower(): int(l.split()[1]) * 1024 for l in lines if l.startswith(("VmRSS:", "VmHWM:"))}
        self.peak = out or self.peak
        return out

    def log_tail(self, n=30):
        return "".join(read_lines(self.log_path)[-n:]) or "(no agent log)"

    def problems(self):
        """Agent log lines at warn level or above, plus events that are not routine."""
        out = [l.rstrip() for l in read_lines(self.log_path) if re.search(r" (warn\w*|error|critical) \[", l)]
        routine = {"agent_started", "agent_stopped", "volume_created", "volume_up", "volume_down",
                   "volume_deleted", "bookmark_added", "view_opened", "view_closed"}
        for l in read_lines(os.path.join(self.state, "events.jsonl")):
            e = json.loads(l)
            if e.get("kind") not in routine:
                out.append(f"event {e.get('kind')}: {e.get('volume')}: {e.get('message')}")
        return out

    def stop(self, timeout=300):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.mem()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log(f"agent pid {self.proc.pid} ignored SIGTERM for {timeout}s; killing it")
                self.proc.kill()
                self.proc.wait()
        if self.proc.returncode != 0:  # crashed or killed: release only this agent's loops and mount
            log(f"agent exited with {self.proc.returncode}; log tail:\n{self.log_tail()}")
            fuse_dir = os.path.join(self.state, "dev") + "/"
            for n in os.listdir("/sys/block"):
                if "".join(read_lines(f"/sys/block/{n}/loop/backing_file")).startswith(fuse_dir):
                    run(["losetup", "-d", f"/dev/{n}"], check=False)
            if os.path.ismount(fuse_dir.rstrip("/")):
                run(["umount", "-l", fuse_dir.rstrip("/")], check=False)


def fio(dev, name, extra, runtime=None, timeout=900):
    """One fio write job (direct, libaio); returns MB/s, IOPS, bytes and latencies."""
    args = ["fio", f"--name={name}", f"--filename={dev}", "--direct=1", "--ioengine=libaio",
            "--output-format=json", "--group_reporting"] + list(extra)
    args += [f"--runtime={runtime}", "--time_based"] if runtime else []
    p = run(args, timeout=timeout)
    job = json.loads(p.stdout[p.stdout.index("{"):])["jobs"][0]
    if job.get("error"):
        raise BenchError(f"fio {name} on {dev} reported error {job['error']}")
    w = job["write"]
    return {"mbps": w["bw_bytes"] / 1e6, "iops": w["iops"], "bytes": w["io_bytes"],
            "lat_us": w["lat_ns"]["mean"] / 1000.0,
            "p99_us": w["clat_ns"].get("percentile", {}).get("99.000000", 0) / 1000.0}


def table(headers, rows, title=None):
    cells = [[str(c) for c in r] for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    out = ([title] if title else []) + ["  ".join(h.ljust(w) for h, w in zip(headers, widths))]
    out.append("  ".join("-" * w for w in widths))
    for r in cells:
        out.append("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))
    return "\n".join(out)


def verdict(value, target, higher_is_better=True):
    return "PASS" if (value >= target if higher_is_better else value <= target) else "FAIL"


def summarize(lines):
    """Collapses repeats (timestamps, rounds, state dirs ignored); events: count, first ... last."""
    groups = {}
    for l in lines:
        key = re.sub(r"^(\[[^]]*\] )?(\S+Z )?", "", l)
        key = re.sub(r"/\S*-state/", "$STATE/", key)
        if m := re.match(r"(event \w+: [^:]*): (.*)", key):
            key, msg = m.group(1), m.group(2)
        else:
            msg = None
        g = groups.setdefault(key, [0, msg, msg])
        g[0], g[2] = g[0] + 1, msg
    return [f"{n}x {k}" + (f": {a}" + (f" ... {b}" if n > 1 else "") if a else "")
            for k, (n, a, b) in groups.items()] or ["(none)"]


def mib(n):
    return f"{n / MiB:.1f} MiB"


def main_wrapper(body):
    """Runs body(cleanup) with cleanup and clear error reporting; returns exit code."""
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)
    cleanup, code = Cleanup(), 1
    try:
        body(cleanup)
        code = 0
    except BenchError as e:
        print(f"\nERROR: {e}", file=sys.stderr)
    except (KeyboardInterrupt, Interrupted) as e:
        print(f"\ninterrupted ({str(e) or 'Ctrl-C'}); cleaning up", file=sys.stderr)
        code = 130
    except Exception as e:  # noqa: BLE001 - a bug in the benchmark: show where
        traceback.print_exc()
        print(f"\nERROR: unexpected {type(e).__name__}: {e}", file=sys.stderr)
    finally:
        cleanup.run_all()
    return code


class NetPair:
    """Two "hosts" on this machine: network namespaces <prefix>src/<prefix>dr joined by a veth
    pair, 10.78.N.1 (source) and 10.78.N.2 (DR). Removed by the cleanup stack."""

    def __init__(self, cleanup, prefix=None):
        pid = os.getpid()
        prefix = prefix or f"ctb{pid}"
        n = pid % 200 + 20
        self.src, self.dr = f"{prefix}src", f"{prefix}dr"
        self.src_ip, self.dr_ip = f"10.78.{n}.1", f"10.78.{n}.2"
        self.veth_src, self.veth_dr = f"cbs{pid}"[:15], f"cbd{pid}"[:15]
        cleanup.push(f"ip netns del {self.src} {self.dr}", self.down)
        run(["ip", "netns", "add", self.src])
        run(["ip", "netns", "add", self.dr])
        run(["ip", "link", "add", self.veth_src, "type", "veth", "peer", "name", self.veth_dr])
        run(["ip", "link", "set", self.veth_src, "netns", self.src])
        run(["ip", "link", "set", self.veth_dr, "netns", self.dr])
        for ns, dev, ip in ((self.src, self.veth_src, self.src_ip), (self.dr, self.veth_dr, self.dr_ip)):
            run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev])
            run(["ip", "-n", ns, "link", "set", dev, "up"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def cut(self):
        run(["ip", "-n", self.src, "link", "set", self.veth_src, "down"])

    def restore(self):
        run(["ip", "-n", self.src, "link", "set", self.veth_src, "up"])

    def wire_bytes(self):
        """tx + rx bytes of the source's veth end (everything on the link, headers included)."""
        base = ["ip", "netns", "exec", self.src, "cat"]
        return sum(int(run(base + [f"/sys/class/net/{self.veth_src}/statistics/{k}_bytes"], quiet=True).stdout)
                   for k in ("tx", "rx"))

    def down(self):
        for ns in (self.src, self.dr):
            run(["ip", "netns", "del", ns], check=False, quiet=True)


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    v = sorted(values)
    return v[max(0, min(len(v) - 1, int(round(p / 100.0 * len(v) + 0.5)) - 1))]
