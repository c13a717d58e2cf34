#!/usr/bin/python3
"""Incremental backup time of a protected volume against its size of change.

Creates a CDP volume (default 4G) on a sparse backing file (--prefill: random
data first), takes a full `continuum backup volume` into a fresh repository,
then for each change fraction (default 0.5%, 1%, 2% of the volume) writes that
many random 1 MiB regions (1 MiB aligned, O_DIRECT, through the volume's block
device), waits until they are applied, and times an incremental
`backup volume NAME` (CLI wall time: repository open, bookmark, view, changed
regions read through the bitmap, save).

Target: 1% changed -> incremental <= 2 s, and the time grows with the changed
bytes, not the volume size (so incremental(1%) must also be far below the full
backup's time: <= 0.25x). Baseline measured in the same run: the full backup.
"""
import argparse
import json
import mmap
import os
import random
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402

TARGET_S = 2.0
FULL_RATIO = 0.25


def write_regions(dev, offsets):
    buf = mmap.mmap(-1, B.MiB)
    fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
    try:
        for off in offsets:
            buf.seek(0)
            buf.write(os.urandom(B.MiB))
            os.pwritev(fd, [buf], off)
        os.fsync(fd)
    finally:
        os.close(fd)
        buf.close()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="4G", help="volume size (default 4G)")
    ap.add_argument("--journal-size", default="2G", help="CDP journal size (default 2G)")
    ap.add_argument("--changes", default="0.5,1,2", help="percent of the volume changed per round (default 0.5,1,2)")
    ap.add_argument("--prefill", action="store_true", help="fill the backing with random data first")
    ap.add_argument("--dir", default="/var/tmp/continuum-bench", help="directory for backing files and state")
    ap.add_argument("--bin", help="continuum binary (default build-bench/continuum or $CONTINUUM_BIN)")
    ap.add_argument("--json", nargs="?", const="-", metavar="FILE",
                    help="write results as JSON to FILE (or stdout with no FILE, instead of the table)")
    args = ap.parse_args()
    changes = [float(x) for x in args.changes.split(",")]

    def body(cleanup):
        B.require_root_and_tools("losetup")
        binary = B.find_binary(args.bin)
        work = B.make_run_dir(args.dir, cleanup, "bvol-")
        size = B.parse_size(args.size)
        name = "bvolbench"
        img = os.path.join(work, "vol.img")
        if args.prefill:
            B.log("pre-filling the backing with random data")
            B.make_filled(img, size)
        else:
            B.make_sparse(img, size)
        agent = B.Agent(binary, work, cleanup).start()
        dev = agent.create_up(cleanup, name, img, args.size, ["--journal-size", args.journal_size])
        repo = os.path.join(work, "repo")
        pw = os.path.join(work, "pw")
        with open(pw, "w") as f:
            f.write("bench\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTINUUM_")}

        def cli(*a):
            return B.run([binary, "--control", agent.sock, *a, "--repo", repo, "--password-file", pw], env=env,
                         timeout=3600)

        def backup(kind):
            t0 = time.perf_counter()
            p = cli("--json", "backup", "volume", name, "--kind", kind)
            dt = time.perf_counter() - t0
            point = json.loads(p.stdout)
            if p.stderr.strip():
                B.log("backup said: " + p.stderr.strip())
            return dt, point

        cli("repo", "init")
        B.log("full backup")
        full_s, full = backup("full")
        B.log(f"full: {full_s:.2f} s, read {B.mib(full['bytes_read'])}")

        rng = random.Random(4)
        regions = size // B.MiB
        rounds = []
        for pct in changes:
            n = max(1, int(regions * pct / 100))
            offsets = [o * B.MiB for o in rng.sample(range(regions), n)]
            t0 = time.perf_counter()
            write_regions(dev, offsets)
            agent.wait_applied(name)
            B.log(f"{pct}%: wrote {n} MiB in {time.perf_counter() - t0:.1f} s")
            dt, point = backup("incremental")
            if point["kind"] != "incremental" or point["volume"]["read"] != "changed":
                raise B.BenchError(f"expected an incremental point read through the bitmap, got {point}")
            rounds.append({"percent": pct, "changed_bytes": n * B.MiB, "seconds": dt,
                           "bytes_read": point["bytes_read"], "new_raw_bytes": point["new_raw_bytes"]})
            B.log(f"{pct}%: incremental {dt:.2f} s, read {B.mib(point['bytes_read'])}")

        one = min(rounds, key=lambda r: abs(r["percent"] - 1.0))
        ok_target = one["seconds"] <= TARGET_S
        ok_ratio = one["seconds"] <= FULL_RATIO * full_s
        ok_read = all(r["bytes_read"] <= r["changed_bytes"] * 1.1 + B.MiB for r in rounds)
        data = {"size": size, "prefill": args.prefill, "full_seconds": full_s, "full_bytes_read": full["bytes_read"],
                "rounds": rounds, "target_s": TARGET_S, "pass": ok_target and ok_ratio and ok_read,
                "agent_problems": agent.problems()}
        if args.json:
            text = json.dumps(data, indent=2)
            if args.json == "-":
                print(text)
                return
            with open(args.json, "w") as f:
                f.write(text + "\n")
        rows = [["full", "100%", B.mib(full["bytes_read"]), f"{full_s:.2f}", "1.00 (base)", "", ""]]
        for r in rounds:
            is_one = r is one
            rows.append([f"incremental", f"{r['percent']}%", B.mib(r["bytes_read"]), f"{r['seconds']:.2f}",
                         f"{r['seconds'] / full_s:.3f}", f"<= {TARGET_S:.1f}" if is_one else "",
                         B.verdict(r["seconds"], TARGET_S, higher_is_better=False) if is_one else ""])
        print(B.table(["backup", "changed", "read", "seconds", "ratio vs full", "target s", "verdict"], rows,
                      title=f"== volume_incremental: {args.size} volume"
                            f"{' (prefilled)' if args.prefill else ' (sparse)'} =="))
        if len(rounds) > 1:
            a, b = rounds[0], rounds[-1]
            print(f"\ngrowth: {b['percent'] / a['percent']:.1f}x the changed bytes took "
                  f"{b['seconds'] / a['seconds']:.2f}x the time "
                  f"({(b['seconds'] - a['seconds']) / max(1, (b['changed_bytes'] - a['changed_bytes']) / B.MiB) * 1000:.1f}"
                  f" ms per extra MiB)")
        print(f"read only the changed regions: {'yes' if ok_read else 'NO'}; "
              f"incremental(1%) <= {FULL_RATIO}x full: {'yes' if ok_ratio else 'NO'}")
        print(f"\nRESULT: {'PASS' if data['pass'] else 'FAIL'}")
        print("\n== agent warnings/errors/events ==")
        print("\n".join(B.summarize(data["agent_problems"])))

    return B.main_wrapper(body)


if __name__ == "__main__":
    sys.exit(main())
