#!/usr/bin/python3
"""Path and image backup/restore of Continuum side by side with restic and borg (issue 4).

Two datasets, each backed up by all three tools into their own repository with compression
and encryption on, measurements interleaved in one run: first backup, unchanged re-run, re-run
after 5% of the data changed, restore (until durable: each tool's restore is followed by a
sync that is timed too; median of interleaved rounds); repository size and peak RSS (wait4 rusage).
Standard library only; run as root with /usr/bin/python3."""
import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from benchlib import (BenchError, MiB, find_binary, log, main_wrapper, make_run_dir, parse_size,  # noqa: E402
                      run, table, verdict)

PASSWORD = "bench-password"
TOOLS = ("continuum", "restic", "borg")
TREE_ROOTS = ("/usr/lib", "/usr/share", "/usr/bin", "/usr/libexec", "/usr/include", "/usr/sbin")


def ensure_peers():
    missing = [p for t, p in (("restic", "restic"), ("borg", "borgbackup")) if shutil.which(t) is None]
    if missing:
        run(["apt-get", "install", "-y"] + missing, timeout=1800)


def drop_caches(enabled):
    if not enabled:
        return
    os.sync()
    with open("/proc/sys/vm/drop_caches", "w") as f:
        f.write("3\n")


def timed(cmd, env=None, cwd=None, stdin=None):
    """Runs cmd; returns (seconds, peak RSS bytes, CPU seconds: user+sys of cmd and its children).

    The peak RSS is wait4's ru_maxrss of a small /usr/bin/time child: Linux keeps a process's
    high-water mark across execve, so a child forked straight from this (large) Python
    process would report at least Python's own RSS."""
    log("$ " + " ".join(cmd))
    rss_file = os.path.join(os.path.dirname(os.path.abspath(cwd or ".")), f".rss-{os.getpid()}")
    wrapped = ["/usr/bin/time", "-f", "%M", "-o", rss_file] + cmd if os.path.exists("/usr/bin/time") else cmd
    start = time.monotonic()
    p = subprocess.Popen(wrapped, env=env, cwd=cwd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # Read both pipes to the end, then reap with wait4 for the rusage.
    out, err = p.stdout.read(), p.stderr.read()
    _, status, ru = os.wait4(p.pid, 0)
    secs = time.monotonic() - start
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise BenchError(f"command failed (exit {p.returncode}): {' '.join(cmd)}\n{(err or out).decode()[-2000:]}")
    rss = ru.ru_maxrss * 1024
    cpu = ru.ru_utime + ru.ru_stime  # wait4 counts the reaped descendants too
    if wrapped is not cmd:
        with open(rss_file) as f:
            rss = int(f.read().split()[-1]) * 1024
        os.unlink(rss_file)
    return secs, rss, cpu


def tree_size(path):
    total = 0
    for root, dirs, files in os.walk(path):
        for n in files:
            try:
                total += os.lstat(os.path.join(root, n)).st_size
            except OSError:
                pass
    return total


def copy_tree(dst, budget):
    """Copies regular files, symlinks and directories from TREE_ROOTS until `budget` bytes."""
    copied = 0
    for top in TREE_ROOTS:
        for root, dirs, files in os.walk(top):
            dirs.sort()
            rel = os.path.relpath(root, "/")
            os.makedirs(os.path.join(dst, rel), exist_ok=True)
            for n in sorted(files):
                src = os.path.join(root, n)
                to = os.path.join(dst, rel, n)
                try:
                    st = os.lstat(src)
                    if os.path.islink(src):
                        os.symlink(os.readlink(src), to)
                    elif os.path.isfile(src):
                        shutil.copy2(src, to)
                        copied += st.st_size
                except OSError:
                    continue
                if copied >= budget:
                    return copied
    return copied


def change_files(root, fraction, seed):
    """Rewrites whole files (same size, new random bytes) until `fraction` of the bytes changed."""
    files = []
    for r, _, names in os.walk(root):
        for n in names:
            p = os.path.join(r, n)
            if os.path.isfile(p) and not os.path.islink(p):
                files.append((p, os.path.getsize(p)))
    files.sort()
    rnd = random.Random(seed)
    rnd.shuffle(files)
    goal = sum(s for _, s in files) * fraction
    changed = 0
    for p, s in files:
        if changed >= goal:
            break
        if s == 0 or s > goal - changed + (1 << 20):
            continue
        with open(p, "r+b") as f:
            f.write(rnd.randbytes(s))
        changed += s
    return changed


class Tool:
    def __init__(self, name, repo, bin_path):
        self.name, self.repo, self.bin = name, repo, bin_path
        self.env = dict(os.environ, RESTIC_PASSWORD=PASSWORD, BORG_PASSPHRASE=PASSWORD, CONTINUUM_PASSWORD=PASSWORD,
                        BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes", BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
                        BORG_BASE_DIR=repo + "-home", RESTIC_CACHE_DIR=repo + "-cache", XDG_CACHE_HOME=repo + "-xdg")
        self.n = 0

    def init(self):
        if self.name == "continuum":
            run([self.bin, "repo", "init", "--repo", self.repo], env=self.env)
        elif self.name == "restic":
            run(["restic", "init", "--repository-version", "2", "-r", self.repo], env=self.env)
        else:
            run(["borg", "init", "-e", "repokey-blake2", self.repo], env=self.env)

    def backup(self, kind, src):
        self.n += 1
        if self.name == "continuum":
            cmd = [self.bin, "backup", "path" if kind == "tree" else "image", src, "--repo", self.repo]
        elif self.name == "restic":
            cmd = ["restic", "-r", self.repo, "backup", "--compression", "auto", src]
        else:
            cmd = ["borg", "create", "--compression", "zstd,3", f"{self.repo}::p{self.n}", src]
        return timed(cmd, env=self.env)

    def restore(self, kind, target):
        os.makedirs(target, exist_ok=True)
        if self.name == "continuum":
            return timed([self.bin, "restore", "latest", "--repo", self.repo, "--to",
                          target if kind == "tree" else os.path.join(target, "disk.img")], env=self.env)
        if self.name == "restic":
            return timed(["restic", "-r", self.repo, "restore", "latest", "--target", target], env=self.env)
        return timed(["borg", "extract", "--sparse", f"{self.repo}::p{self.n}"], env=self.env, cwd=target)

    def size(self):
        return tree_size(self.repo)


def bench_dataset(args, run_dir, kind, src, binary, drop, change_fn):
    tools = {t: Tool(t, os.path.join(run_dir, f"repo-{kind}-{t}"), binary) for t in TOOLS}
    res = {t: {} for t in TOOLS}
    for t in tools.values():
        t.init()
    order = list(TOOLS)

    def step(label, fn):
        nonlocal order
        for t in order:
            drop_caches(drop)
            secs, rss, cpu = fn(tools[t])
            res[t][label] = secs
            res[t][label + " cpu"] = cpu
            res[t]["rss"] = max(res[t].get("rss", 0), rss)
            log(f"{kind} {label} {t}: {secs:.2f} s, {cpu:.2f} CPU s, peak RSS {rss / MiB:.0f} MiB")
        order = order[1:] + order[:1]  # rotate who goes first: spreads the noise of other load

    data_bytes = os.path.getsize(src) if kind == "image" else tree_size(src)
    step("first", lambda t: t.backup(kind, src))
    step("unchanged", lambda t: t.backup(kind, src))
    changed = change_fn()
    log(f"{kind}: changed {changed / MiB:.0f} MiB")
    step("changed", lambda t: t.backup(kind, src))
    for t in TOOLS:
        res[t]["repo"] = tools[t].size()

    # Restore is timed until the data is durable: Continuum's restore syncs
    # before it returns, restic and borg leave gigabytes in the page cache, so
    # each tool's command is followed by a sync that counts too. The time the
    # command alone took is reported as well. Several interleaved rounds, the
    # median of each tool: restore times on a shared host vary by a quarter.
    rounds = {t: [] for t in TOOLS}
    for i in range(args.restore_rounds):
        for t in order:
            drop_caches(drop)
            target = os.path.join(run_dir, f"restore-{kind}-{t}")
            try:
                secs, rss, cpu = tools[t].restore(kind, target)
                start = time.monotonic()
                os.sync()
                synced = time.monotonic() - start
            finally:
                shutil.rmtree(target, ignore_errors=True)
            rounds[t].append((secs + synced, secs, cpu))
            res[t]["rss"] = max(res[t].get("rss", 0), rss)
            log(f"{kind} restore {t} (round {i + 1}): {secs:.2f} s + sync {synced:.2f} s, {cpu:.2f} CPU s, "
                f"peak RSS {rss / MiB:.0f} MiB")
        order = order[1:] + order[:1]
    for t in TOOLS:
        durable, returned, cpu = sorted(rounds[t])[len(rounds[t]) // 2]
        res[t]["restore"], res[t]["restore returned"], res[t]["restore cpu"] = durable, returned, cpu
    return data_bytes, res


def report(kind, data_bytes, res):
    c, r, b = res["continuum"], res["restic"], res["borg"]
    rate = lambda s: data_bytes / s / MiB if s else 0  # noqa: E731
    rows = []
    for label in ("first", "unchanged", "changed", "restore"):
        rows.append([f"{label} (s)", f"{c[label]:.2f}", f"{r[label]:.2f}", f"{b[label]:.2f}"])
    k = "restore returned"
    rows.append(["restore, no sync (s)", f"{c[k]:.2f}", f"{r[k]:.2f}", f"{b[k]:.2f}"])
    # CPU seconds (user+sys) vary far less than wall time on a shared host.
    for label in ("first", "restore"):
        k = label + " cpu"
        rows.append([f"{label} CPU (s)", f"{c[k]:.2f}", f"{r[k]:.2f}", f"{b[k]:.2f}"])
    rows.append(["first MiB/s", f"{rate(c['first']):.0f}", f"{rate(r['first']):.0f}", f"{rate(b['first']):.0f}"])
    rows.append(["restore MiB/s", f"{rate(c['restore']):.0f}", f"{rate(r['restore']):.0f}",
                 f"{rate(b['restore']):.0f}"])
    rows.append(["repo MiB", f"{c['repo'] / MiB:.0f}", f"{r['repo'] / MiB:.0f}", f"{b['repo'] / MiB:.0f}"])
    rows.append(["peak RSS MiB", f"{c['rss'] / MiB:.0f}", f"{r['rss'] / MiB:.0f}", f"{b['rss'] / MiB:.0f}"])
    out = [table(["metric", "continuum", "restic", "borg"], rows,
                 f"\n== {kind}: {data_bytes / MiB:.0f} MiB of data ==")]

    faster = min(r["first"], b["first"])
    smaller = min(r["repo"], b["repo"])
    checks = [
        ("first backup speed vs faster peer", faster / c["first"], ">= 2.0", faster / c["first"] >= 2.0),
        ("unchanged re-run time vs restic", c["unchanged"] / r["unchanged"], "<= 0.5",
         c["unchanged"] / r["unchanged"] <= 0.5),
        ("5% changed time vs restic (info)", c["changed"] / r["changed"], "-", None),
        ("repository size vs smaller peer", c["repo"] / smaller, "<= 1.05", c["repo"] / smaller <= 1.05),
        ("restore speed vs restic (durable)", r["restore"] / c["restore"], ">= 2.0", r["restore"] / c["restore"] >= 2.0),
        ("restore speed vs restic (no sync, info)", r["restore returned"] / c["restore returned"], "-", None),
        ("peak RSS vs restic", c["rss"] / r["rss"], "<= 1.0", c["rss"] <= r["rss"]),
    ]
    out.append(table(["target", "ratio", "goal", "verdict"],
                     [[n, f"{v:.2f}", g, "-" if ok is None else ("PASS" if ok else "FAIL")] for n, v, g, ok in checks]))
    return "\n".join(out), {"data_bytes": data_bytes, "results": res,
                            "checks": {n: {"ratio": v, "pass": ok} for n, v, _, ok in checks}}


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--dir", default="/var/tmp/continuum-bench-backup")
    ap.add_argument("--bin")
    ap.add_argument("--quick", action="store_true", help="512 MiB tree, 1 GiB image (fast iteration)")
    ap.add_argument("--tree-size", help="bytes of /usr to copy (default 2G, --quick 512M)")
    ap.add_argument("--image-size", help="image size (default 4G, --quick 1G); about 40%% is filled")
    ap.add_argument("--only", choices=("tree", "image"))
    ap.add_argument("--restore-rounds", type=int, default=3, help="interleaved restore rounds; the median counts")
    ap.add_argument("--no-drop-caches", action="store_true", help="keep the page cache between measurements")
    ap.add_argument("--json", nargs="?", const="-", help="also write JSON to FILE (no FILE: JSON on stdout)")
    args = ap.parse_args()
    tree_size_goal = parse_size(args.tree_size or ("512M" if args.quick else "2G"))
    image_size = parse_size(args.image_size or ("1G" if args.quick else "4G"))

    def body(cleanup):
        if os.geteuid() != 0:
            raise BenchError("run as root (mount, drop_caches, apt-get)")
        binary = find_binary(args.bin)
        ensure_peers()
        run_dir = make_run_dir(args.dir, cleanup, "run-")
        drop = not args.no_drop_caches
        texts, results = [], {}
        if args.only in (None, "tree"):
            src = os.path.join(run_dir, "tree")
            log(f"copying {tree_size_goal / MiB:.0f} MiB of /usr to {src}")
            copy_tree(src, tree_size_goal)
            t, j = report("tree", *bench_dataset(args, run_dir, "tree", src, binary, drop,
                                                 lambda: change_files(src, 0.05, 1)))
            texts.append(t)
            results["tree"] = j
            log(t)
            shutil.rmtree(src, ignore_errors=True)
        if args.only in (None, "image"):
            img = os.path.join(run_dir, "disk.img")
            mnt = os.path.join(run_dir, "mnt")
            os.makedirs(mnt)
            open(img, "wb").close()
            os.truncate(img, image_size)
            run(["mkfs.ext4", "-q", "-F", img])

            def with_mount(fn):
                run(["mount", "-o", "loop", img, mnt])
                try:
                    return fn()
                finally:
                    run(["umount", mnt])

            log(f"filling {image_size / MiB:.0f} MiB image with {image_size * 0.4 / MiB:.0f} MiB of /usr")
            with_mount(lambda: copy_tree(mnt, int(image_size * 0.4)))
            t, j = report("image", *bench_dataset(args, run_dir, "image", img, binary, drop,
                                                  lambda: with_mount(lambda: change_files(mnt, 0.05, 2))))
            texts.append(t)
            results["image"] = j
        if args.json != "-":
            print("\n".join(texts))
            print("\nNote: other processes on this host add noise; the tools run interleaved, in rotating order.")
        if args.json:
            text = json.dumps(results, indent=2)
            if args.json == "-":
                print(text)
            else:
                with open(args.json, "w") as f:
                    f.write(text + "\n")

    return main_wrapper(body)


if __name__ == "__main__":
    sys.exit(main())
