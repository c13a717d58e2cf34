#!/usr/bin/python3
"""Replication benchmarks: a primary agent and a DR `continuum server` in two network
namespaces joined by a veth pair (TLS, certificates from `continuum pki`).

  (a) throughput  fio seq 1M QD4 and rand 4K fsync QD1 through a volume replicating async and
                  sync, vs the same volume with no target (capture only) and a plain loop device.
                  Target: async >= 0.9x capture-only.
  (b) lag         RPO lag p50/p99 under a sustained, rate-limited write load (--lag-rate, below
                  link speed), sampled every 100 ms. Target: p99 <= 1 s.
  (c) outage      link cut for --outage seconds under load: time from link restore until caught
                  up, and bytes sent.
  (d) diff        --image-size image with 1% of blocks changed: Continuum catching up from its write
                  log after the DR link was down, and by checksum differential sync after
                  unreplicate + replicate, vs `rsync --inplace --no-whole-file` to an rsync daemon in
                  the DR namespace. Time and bytes on the wire (bench/diff_sync.py: the latter alone).
"""
import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402

PORT = 7700
DR_TMPFS_SIZE = "12g"  # --dr-disk tmpfs: room for a 4G mirror plus its journals
SEQ = ("seq1m", "seq 1M write QD4", ["--rw=write", "--bs=1M", "--iodepth=4"])
RAND = ("rand4k", "rand 4K write fsync=1 QD1", ["--rw=randwrite", "--bs=4k", "--iodepth=1", "--fsync=1",
                                                "--randrepeat=0"])


class Sites:
    """PKI, the namespaces, a DR server and a primary agent, all on the cleanup stack."""

    def __init__(self, binary, run_dir, cleanup, tag="", problems=None, dr_disk="shared"):
        """dr_disk "tmpfs" puts the DR server's state (mirror and journals) on a RAM file system:
        the DR host's own disk, instead of the one the primary writes to."""
        self.binary, self.run_dir, self.cleanup = binary, run_dir, cleanup
        self.problems = problems if problems is not None else []
        pki = os.path.join(run_dir, "pki")
        if not os.path.exists(os.path.join(pki, "ca.crt")):
            B.run([binary, "pki", "init", "--dir", pki])
            B.run([binary, "pki", "issue", "prod1", "--dir", pki])
            B.run([binary, "pki", "issue", "dr1", "--dir", pki])
        self.net = B.NetPair(cleanup)
        self.to = f"{self.net.dr_ip}:{PORT}"
        self.server = B.Agent(binary, run_dir, cleanup, tag=f"server{tag}", role="server", netns=self.net.dr,
                              args=["--pki", pki, "--name", "dr1", "--listen", self.to])
        if dr_disk == "tmpfs":
            B.mount_tmpfs(cleanup, self.server.state, DR_TMPFS_SIZE)
        self.agent = B.Agent(binary, run_dir, cleanup, tag=f"agent{tag}", netns=self.net.src,
                             args=["--pki", pki, "--name", "prod1"])
        cleanup.push("collect agent/server problems", self.collect)
        self.server.start()
        self.agent.start()

    def collect(self):
        for who, a in (("agent", self.agent), ("server", self.server)):
            self.problems.extend(f"[{who}] {p}" for p in a.problems())

    def target(self, vol):
        ts = self.agent.json("volume", "targets", vol)
        return ts[0] if ts else None

    def wait_caught_up(self, vol, timeout=900, min_seq=None):
        """Until the target streams and has acknowledged everything (or min_seq); returns seconds."""
        t0 = time.time()
        while True:
            t = self.target(vol)
            goal = t["last_seq"] if min_seq is None else min_seq
            if t["state"] == "streaming" and t["acked_seq"] >= goal and not t["resyncing"]:
                return time.time() - t0
            if time.time() - t0 > timeout:
                raise B.BenchError(f"target of {vol} did not catch up in {timeout}s: {t}")
            time.sleep(0.05)


def make_volume(sites, cleanup, name, size, mode, args):
    img = os.path.join(sites.run_dir, f"{name}.img")
    B.make_sparse(img, size)
    cleanup.push(f"rm {img}", lambda: os.path.exists(img) and os.unlink(img))
    extra = [] if args.cdp else ["--no-cdp"]
    dev = sites.agent.create_up(cleanup, name, img, size, extra)
    if mode:
        sites.agent.cli("volume", "replicate", name, "--to", sites.to, "--mode", mode,
                        "--compress", args.compress)
        cleanup.push(f"unreplicate {name}",
                     lambda: sites.agent.cli("volume", "unreplicate", name, "--to", sites.to, check=False))
        sites.wait_caught_up(name, timeout=120)
    return dev


# ---------------------------------------------------------------------------------------- (a)
def bench_throughput(args, binary, run_dir, cleanup, problems):
    size = B.parse_size(args.size)
    res = {}
    img = os.path.join(run_dir, "plain.img")
    B.make_sparse(img, size)
    sub = B.Cleanup()
    try:
        dev = B.loop_attach(sub, img, direct_io=True)
        res["plain"] = {k: B.fio(dev, k, x + [f"--size={size}"], runtime=args.runtime) for k, _, x in (SEQ, RAND)}
    finally:
        sub.run_all()
        os.unlink(img)
    for mode in ("capture", "async", "sync"):
        B.log(f"(a) throughput: volume {mode}")
        sub = B.Cleanup()
        try:
            sites = Sites(binary, run_dir, sub, tag=f"-a-{mode}", problems=problems, dr_disk=args.dr_disk)
            name = f"tp{mode}"
            dev = make_volume(sites, sub, name, size, None if mode == "capture" else mode, args)
            res[mode] = {}
            for key, _, extra in (SEQ, RAND):
                r = B.fio(dev, key, extra + [f"--size={size}"], runtime=args.runtime)
                r["drain_s"] = sites.agent.wait_applied(name)
                if mode != "capture":
                    r["catchup_s"] = sites.wait_caught_up(name)
                    t = sites.target(name)
                    r["wire_bytes"] = t["wire_bytes"]
                B.log(f"{mode} {key}: {r['mbps']:.1f} MB/s {r['iops']:.0f} IOPS")
                res[mode][key] = r
        finally:
            sub.run_all()
    return res


def report_throughput(res, args):
    rows = []
    for key, label, _ in (SEQ, RAND):
        plain, cap = res["plain"][key]["mbps"], res["capture"][key]["mbps"]
        for mode in ("plain", "capture", "async", "sync"):
            r = res[mode][key]
            vs_cap = r["mbps"] / cap if cap else 0
            tgt = 0.9 if mode == "async" else None
            rows.append([label if mode == "plain" else "", mode, f"{r['mbps']:.1f}", f"{r['iops']:.0f}",
                         f"{r['lat_us']:.0f}", f"{r['p99_us']:.0f}",
                         f"{r['mbps'] / plain:.2f}" if plain else "-",
                         f"{vs_cap:.2f}" if mode != "plain" else "-",
                         f">= {tgt}" if tgt else "", B.verdict(vs_cap, tgt) if tgt else "",
                         f"{r['drain_s']:.1f}" if "drain_s" in r else "",
                         f"{r['catchup_s']:.1f}" if "catchup_s" in r else ""])
    return B.table(["workload", "config", "MB/s", "IOPS", "lat avg us", "p99 us", "vs plain", "vs capture",
                    "target", "verdict", "drain s", "catch-up s"], rows,
                   title=f"== (a) write throughput: {args.size} volume{' (CDP)' if args.cdp else ' (--no-cdp)'}, "
                         f"{args.runtime} s per workload, compress {args.compress} ==")


# ---------------------------------------------------------------------------------------- (b)
def fio_bg(dev, name, extra, log_path):
    """A time-based fio in the background (its own session); stopped with SIGTERM."""
    args = ["fio", f"--name={name}", f"--filename={dev}", "--direct=1", "--ioengine=libaio", "--time_based",
            "--runtime=100000", "--output-format=json", "--group_reporting"] + extra
    B.log("$ " + " ".join(args) + " &")
    logf = open(log_path, "w")
    p = subprocess.Popen(args, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)
    logf.close()

    def stop():
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
    return p, stop


def sample_lag(sites, vol, seconds, interval=0.1):
    """Samples every interval: product lag_seconds, and the lag seen from outside (now minus the
    last sample time at which every write up to acked_seq had already been issued; an upper bound
    within one interval)."""
    hist, prod, ext, unknown = [], [], [], 0
    t_end = time.time() + seconds
    while (now := time.time()) < t_end:
        t = sites.target(vol)
        hist.append((now, t["last_seq"]))
        a = t["acked_seq"]
        if a >= t["last_seq"]:
            ext.append(0.0)
        else:
            # the newest sample whose last_seq <= acked: all writes acknowledged were issued by then
            prev = [ts for ts, ls in hist if ls <= a]
            ext.append(now - prev[-1] if prev else now - hist[0][0])
        if t["lag_seconds"] < 0:
            unknown += 1
        else:
            prod.append(t["lag_seconds"])
        time.sleep(max(0.0, interval - (time.time() - now)))
    return prod, ext, unknown


def bench_lag(args, binary, run_dir, cleanup, problems):
    sub = B.Cleanup()
    try:
        sites = Sites(binary, run_dir, sub, tag="-b", problems=problems)
        dev = make_volume(sites, sub, "lag", B.parse_size(args.size), "async", args)
        p, stop = fio_bg(dev, "lag", ["--rw=randwrite", "--bs=64k", "--iodepth=4", f"--rate={args.lag_rate}"],
                         os.path.join(run_dir, "fio-lag.json"))
        sub.push("stop fio", stop)
        time.sleep(2)
        t0 = sites.target("lag")
        prod, ext, unknown = sample_lag(sites, "lag", args.lag_time)
        t1 = sites.target("lag")
        stop()
        span = args.lag_time
        return {"prod": prod, "ext": ext, "unknown": unknown, "samples": len(ext),
                "rate": (t1["bytes_sent"] - t0["bytes_sent"]) / span}
    finally:
        sub.run_all()


def report_lag(r, args):
    rows = []
    for label, v in (("lag seen from outside (100 ms sampling, upper bound)", r["ext"]),
                     ("product lag_seconds", r["prod"])):
        if not v:
            rows.append([label, "-", "-", "-", "<= 1.0", "n/a"])
            continue
        p99 = B.percentile(v, 99)
        rows.append([label, f"{B.percentile(v, 50):.3f}", f"{p99:.3f}", f"{max(v):.3f}", "<= 1.0",
                     B.verdict(p99, 1.0, higher_is_better=False)])
    return B.table(["measure", "p50 s", "p99 s", "max s", "p99 target", "verdict"], rows,
                   title=f"== (b) RPO lag: async, fio randwrite 64k QD4 at {args.lag_rate}/s for {args.lag_time} s, "
                         f"{r['samples']} samples ({r['unknown']} with lag_seconds unknown), "
                         f"shipped {r['rate'] / 1e6:.1f} MB/s ==")


# ---------------------------------------------------------------------------------------- (c)
def bench_outage(args, binary, run_dir, cleanup, problems):
    sub = B.Cleanup()
    try:
        sites = Sites(binary, run_dir, sub, tag="-c", problems=problems)
        dev = make_volume(sites, sub, "outage", B.parse_size(args.size), "async", args)
        p, stop = fio_bg(dev, "outage", ["--rw=randwrite", "--bs=64k", "--iodepth=4",
                                         f"--rate={args.outage_rate}"], os.path.join(run_dir, "fio-outage.json"))
        sub.push("stop fio", stop)
        time.sleep(3)
        sites.net.cut()
        sub.push("restore link", lambda: sites.net.restore())
        B.log(f"(c) link cut for {args.outage} s under load")
        t_cut = sites.target("outage")
        time.sleep(args.outage)
        before = sites.target("outage")
        wire0 = sites.net.wire_bytes()
        sites.net.restore()
        t_restore = time.time()
        # caught up = everything written up to the restore is acknowledged, under continuing load
        catchup = sites.wait_caught_up("outage", min_seq=before["last_seq"])
        after = sites.target("outage")
        wire1 = sites.net.wire_bytes()
        # how long until the lag is back under a second (steady state)
        settle = None
        while time.time() - t_restore < 300:
            t = sites.target("outage")
            if t["state"] == "streaming" and 0 <= t["lag_seconds"] < 1.0:
                settle = time.time() - t_restore
                break
            time.sleep(0.05)
        stop()
        # bytes from the cut on: what the sender wrote into the dead connection counts too
        return {"backlog_seqs": before["last_seq"] - before["acked_seq"],
                "outage_writes": before["last_seq"] - t_cut["last_seq"],
                "state_during": before["state"], "error_during": before["last_error"],
                "catchup_s": catchup, "settle_s": settle,
                "bytes_sent": after["bytes_sent"] - t_cut["bytes_sent"],
                "wire_bytes": after["wire_bytes"] - t_cut["wire_bytes"], "link_bytes": wire1 - wire0}
    finally:
        sub.run_all()


def report_outage(r, args):
    rows = [["link restore -> acked all written before restore", f"{r['catchup_s']:.2f}",
             B.mib(r["bytes_sent"]), B.mib(r["wire_bytes"]), B.mib(r["link_bytes"])],
            ["link restore -> lag_seconds < 1 s (load continuing)",
             f"{r['settle_s']:.2f}" if r["settle_s"] is not None else "> 300", "", "", ""]]
    return B.table(["phase", "seconds", "payload since cut", "app wire since cut", "veth tx+rx after restore"],
                   rows,
                   title=f"== (c) resync after a {args.outage} s link cut under load (randwrite 64k at "
                         f"{args.outage_rate}/s): backlog {r['backlog_seqs']} writes, target was "
                         f"'{r['state_during']}' ({r['error_during'] or 'no error'}) ==")


# ---------------------------------------------------------------------------------------- (d)
def fill_random(path, size):
    B.run(["fio", "--name=fill", f"--filename={path}", "--rw=write", "--bs=1M", "--iodepth=8", "--direct=1",
           "--ioengine=libaio", f"--size={size}", "--refill_buffers", "--output-format=terse"], timeout=3600)


def change_plan(size, bs, fraction, seed=42):
    n = size // bs
    rng = random.Random(seed)
    return sorted(rng.sample(range(n), max(1, int(n * fraction)))), rng


def apply_changes(path, plan, bs, seed):
    rng = random.Random(seed)
    flags = os.O_WRONLY | (os.O_DIRECT if path.startswith("/dev/") else 0)
    fd = os.open(path, flags)
    try:
        import mmap
        buf = mmap.mmap(-1, bs)
        for blk in plan:
            buf.seek(0)
            buf.write(rng.randbytes(bs))
            os.pwrite(fd, buf, blk * bs)
        os.fsync(fd)
    finally:
        os.close(fd)


def rsync_baseline(run_dir, size, bs, plan):
    """`rsync --inplace --no-whole-file` of a random image with `plan` blocks changed, to an rsync
    daemon in the DR namespace holding the unchanged copy. Returns seconds, app and veth bytes."""
    sub = B.Cleanup()
    try:
        net = B.NetPair(sub, prefix=f"ctr{os.getpid()}")
        src_img, dr_dir = os.path.join(run_dir, "rsync-src.img"), os.path.join(run_dir, "rsync-dr")
        os.makedirs(dr_dir)
        sub.push("rm rsync files", lambda: (shutil.rmtree(dr_dir, ignore_errors=True),
                                            os.path.exists(src_img) and os.unlink(src_img)))
        B.log(f"{B.mib(size)} random image for rsync")
        fill_random(src_img, size)
        B.run(["cp", "--sparse=never", src_img, os.path.join(dr_dir, "img")], timeout=3600)
        conf = os.path.join(run_dir, "rsyncd.conf")
        with open(conf, "w") as f:
            f.write(f"pid file = {run_dir}/rsyncd.pid\nuse chroot = no\nuid = root\ngid = root\n"
                    f"[dr]\npath = {dr_dir}\nread only = no\n")
        d = subprocess.Popen(["ip", "netns", "exec", net.dr, "rsync", "--daemon", "--no-detach",
                              f"--config={conf}", f"--address={net.dr_ip}", "--port=8730"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

        def stop_daemon():
            if d.poll() is None:
                d.terminate()
                d.wait(30)
        sub.push(f"stop rsync daemon pid {d.pid}", stop_daemon)
        time.sleep(0.5)
        apply_changes(src_img, plan, bs, 7)
        B.run(["sync"])
        B.run(["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"], check=False)
        w0 = net.wire_bytes()
        t0 = time.time()
        p = B.run(["ip", "netns", "exec", net.src, "rsync", "--inplace", "--no-whole-file", "--ignore-times", "--stats", src_img,
                   f"rsync://{net.dr_ip}:8730/dr/img"], timeout=7200)
        out = {"s": time.time() - t0, "link": net.wire_bytes() - w0}
        m = {k: int(v.replace(",", "")) for k, v in
             __import__("re").findall(r"Total bytes (sent|received): ([\d,]+)", p.stdout)}
        out["app"] = m.get("sent", 0) + m.get("received", 0)
        B.log(f"rsync: {out}")
        if B.run(["cmp", src_img, os.path.join(dr_dir, "img")], check=False, timeout=3600).returncode != 0:
            raise B.BenchError("rsync copy differs from the source image")
        return out
    finally:
        sub.run_all()


def bench_diff(args, binary, run_dir, cleanup, problems):
    size, bs = B.parse_size(args.image_size), B.parse_size(args.change_bs)
    plan, _ = change_plan(size, bs, 0.01)
    changed = len(plan) * bs
    res = {"changed": changed, "blocks": len(plan)}
    res["rsync"] = rsync_baseline(run_dir, size, bs, plan)

    # --- Continuum: initial sync, DR link down, 1% changed, link up, catch up from the write log
    sub = B.Cleanup()
    try:
        sites = Sites(binary, run_dir, sub, tag="-d", problems=problems)
        dev = make_volume(sites, sub, "diff", size, None, args)
        B.log(f"(d) {args.image_size} of random data into the volume, then initial sync")
        fill_random(dev, size)
        sites.agent.wait_applied("diff")
        t0 = time.time()
        sites.agent.cli("volume", "replicate", "diff", "--to", sites.to, "--mode", "async",
                        "--compress", args.compress)
        sub.push("unreplicate diff", lambda: sites.agent.cli("volume", "unreplicate", "diff", "--to", sites.to,
                                                             check=False))
        sites.wait_caught_up("diff", timeout=3600)
        res["initial"] = {"s": time.time() - t0, "app": sites.target("diff")["wire_bytes"]}
        sites.net.cut()
        sub.push("restore link", lambda: sites.net.restore())
        time.sleep(1)
        at_cut = sites.target("diff")  # the sender may write into the dead connection: count from here
        apply_changes(dev, plan, bs, 7)
        sites.agent.wait_applied("diff")
        before = sites.target("diff")
        w0 = sites.net.wire_bytes()
        sites.net.restore()
        t0 = time.time()
        sites.wait_caught_up("diff", timeout=3600, min_seq=before["last_seq"])
        after = sites.target("diff")
        res["log"] = {"s": time.time() - t0, "app": after["wire_bytes"] - at_cut["wire_bytes"],
                      "link": sites.net.wire_bytes() - w0}
        B.log(f"continuum write-log catch-up: {res['log']}")
        # Same again, but the agent restarts during the outage: its write cache is gone and
        # the sender resyncs what the persistent change bitmap names (issue 3: "when the
        # change bitmap is available").
        sites.net.cut()
        time.sleep(1)
        at_cut = sites.target("diff")
        plan3, _ = change_plan(size, bs, 0.01, seed=44)
        apply_changes(dev, plan3, bs, 9)
        sites.agent.wait_applied("diff")
        sites.agent.stop()
        sites.agent.start()
        dev = sites.agent.status("diff").get("device") or dev
        before = sites.target("diff")
        w0 = sites.net.wire_bytes()
        sites.net.restore()
        t0 = time.time()
        sites.wait_caught_up("diff", timeout=3600, min_seq=before["last_seq"])
        after = sites.target("diff")
        res["bitmap"] = {"s": time.time() - t0, "app": after["wire_bytes"],
                         "link": sites.net.wire_bytes() - w0}
        B.log(f"continuum bitmap resync after an agent restart: {res['bitmap']}")
        # Same change again, but replication re-created: no write log covers the target's state.
        sites.agent.cli("volume", "unreplicate", "diff", "--to", sites.to)
        plan2, _ = change_plan(size, bs, 0.01, seed=43)
        apply_changes(dev, plan2, bs, 8)
        sites.agent.wait_applied("diff")
        w0 = sites.net.wire_bytes()
        t0 = time.time()
        sites.agent.cli("volume", "replicate", "diff", "--to", sites.to, "--mode", "async",
                        "--compress", args.compress)
        sites.wait_caught_up("diff", timeout=3600)
        t = sites.target("diff")
        d = t.get("diff_sync") or {}
        res["rereplicate"] = {"s": time.time() - t0, "link": sites.net.wire_bytes() - w0,
                              "app": t["wire_bytes"] + d.get("sums_bytes", 0) + d.get("request_bytes", 0)}
        B.log(f"continuum re-replicate: {res['rereplicate']}")
        # the replica must equal the primary
        vdev = sites.server.cli("view", "open", "prod1.diff", "--at", "latest").stdout.strip()
        try:
            same = B.run(["cmp", "-n", str(size), dev, vdev], check=False, timeout=3600).returncode == 0
        finally:
            sites.server.cli("view", "close", vdev, check=False)
        res["replica_equal"] = same
        if not same:
            B.log("WARNING: replica differs from the primary after the differential sync")
    finally:
        sub.run_all()
    return res


def report_diff(r, args):
    rs = r["rsync"]
    rows = [["rsync --inplace --no-whole-file (daemon)", f"{rs['s']:.2f}", B.mib(rs["app"]), B.mib(rs["link"]),
             f"{rs['link'] / r['changed']:.2f}", "1.00 (base)", "", ""]]
    # A new target gets the whole volume (the initial sync, veth column = app bytes there); a
    # target that already has a replica of unknown state is compared by checksums (diff_sync.py).
    r = dict(r, full={"s": r["initial"]["s"], "app": r["initial"]["app"], "link": r["initial"]["app"]})
    for key, label, tgt in (("log", "continuum: catch-up from the write log (link was down)", 10),
                            ("bitmap", "continuum: resync from the change bitmap (link down + agent restart)", 10),
                            ("rereplicate", "continuum: unreplicate + replicate = checksum differential sync", 2),
                            ("full", "continuum: new target = whole-volume initial sync (reference)", 0)):
        c = r.get(key)
        if not c:
            continue
        speed = rs["s"] / c["s"] if c["s"] else 0
        rows.append([label, f"{c['s']:.2f}", B.mib(c["app"]), B.mib(c["link"]), f"{c['link'] / r['changed']:.2f}",
                     f"{speed:.1f}x", f">= {tgt}x, wire <= 1.1" if tgt else "(reference)",
                     "" if not tgt else "PASS" if speed >= tgt and c["link"] <= 1.1 * r["changed"] else "FAIL"])
    return B.table(["method", "seconds", "app bytes", "veth tx+rx (*app)", "wire/changed", "speed vs rsync", "target",
                    "verdict"], rows,
                   title=f"== (d) differential sync: {args.image_size} random image, {r['blocks']} x "
                         f"{args.change_bs} blocks changed (1%, {B.mib(r['changed'])}); replica equal: "
                         f"{r.get('replica_equal')} ==")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=["throughput", "lag", "outage", "diff"], action="append",
                    help="run only these parts (repeatable; default all)")
    ap.add_argument("--size", default="4G", help="volume size for (a)-(c) (default 4G)")
    ap.add_argument("--runtime", type=int, default=10, help="(a) seconds per fio workload (default 10)")
    ap.add_argument("--cdp", action="store_true", help="volumes with the CDP journal (default --no-cdp)")
    ap.add_argument("--compress", default="none", choices=["none", "lz4", "zstd"], help="(default none)")
    ap.add_argument("--lag-rate", default="50m", help="(b) fio write rate (default 50m = 50 MiB/s)")
    ap.add_argument("--lag-time", type=int, default=20, help="(b) seconds of sampling (default 20)")
    ap.add_argument("--outage", type=int, default=60, help="(c) link-down seconds (default 60)")
    ap.add_argument("--outage-rate", default="20m", help="(c) fio write rate during the test (default 20m)")
    ap.add_argument("--image-size", default="8G", help="(d) image size (default 8G)")
    ap.add_argument("--change-bs", default="64K", help="(d) size of each changed block (default 64K)")
    ap.add_argument("--dr-disk", choices=["shared", "tmpfs"], default="shared",
                    help="(a) where the DR server keeps its state: on the primary's disk (default; both "
                         "\"hosts\" then share one device) or on a tmpfs standing in for the DR host's own disk")
    ap.add_argument("--dir", default="/var/tmp/continuum-bench", help="directory for images and state")
    ap.add_argument("--bin", help="continuum binary (default build-bench/continuum or $CONTINUUM_BIN)")
    ap.add_argument("--json", nargs="?", const="-", metavar="FILE",
                    help="write results as JSON to FILE (or stdout with no FILE, instead of the tables)")
    args = ap.parse_args()
    parts = args.only or ["throughput", "lag", "outage", "diff"]

    def body(cleanup):
        B.require_root_and_tools("fio", "losetup", "ip", *(["rsync", "cmp"] if "diff" in parts else []))
        binary = B.find_binary(args.bin)
        run_dir = B.make_run_dir(args.dir, cleanup, "repl-")
        data, out, problems = {"args": vars(args), "binary": binary}, [], []
        fns = {"throughput": (bench_throughput, report_throughput), "lag": (bench_lag, report_lag),
               "outage": (bench_outage, report_outage), "diff": (bench_diff, report_diff)}
        for part in parts:
            B.log(f"== {part} ==")
            data[part] = fns[part][0](args, binary, run_dir, cleanup, problems)
            out.append(fns[part][1](data[part], args))
            print(out[-1] + "\n", file=sys.stderr)
        data["problems"] = problems
        if args.json:
            text = json.dumps(data, indent=2, default=str)
            if args.json == "-":
                print(text)
                return
            with open(args.json, "w") as f:
                f.write(text + "\n")
        print("\n\n".join(out))
        print("\n== agent/server warnings/errors/events ==")
        print("\n".join(B.summarize(problems)))

    return B.main_wrapper(body)


if __name__ == "__main__":
    sys.exit(main())
