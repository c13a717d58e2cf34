#!/usr/bin/python3
"""Differential sync benchmark: a DR target that already holds an older image of the volume.

An --image-size (8G) random image with --fraction (1%) of --change-bs (64K) blocks changed,
spread at random, across the veth link between two network namespaces:

  rsync     `rsync --inplace --no-whole-file --stats` to an rsync daemon in the DR namespace
            holding the unchanged copy (checksums alone, like Continuum here).
  continuum a replicated volume is unreplicated, the blocks change, `volume replicate` again: the
            target has the replica, its state is unknown to the source, so both sides compare
            XXH3 checksums and only the differing blocks are resent.

Time from the command until done, bytes on the wire (veth tx+rx of the source namespace, so TCP,
TLS and both directions count; and the application's own counters), and the replica compared
with the primary byte for byte. Runs --rounds rounds, alternating rsync and Continuum, and
reports medians. Targets: Continuum >= 2x faster than rsync; its veth bytes <= 1.1x the changed
bytes. Noisy on shared hosts: compare the two rows of one run, not runs with each other.
"""
import argparse
import json
import os
import shutil
import statistics
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402
import replication_bench as R  # noqa: E402


def drop_caches():
    B.run(["sync"])
    B.run(["sh", "-c", "echo 3 > /proc/sys/vm/drop_caches"], check=False)


def continuum_round(args, binary, run_dir, size, bs, plan, seed, problems):
    sub = B.Cleanup()
    try:
        ns = argparse.Namespace(cdp=False, compress="none")
        sites = R.Sites(binary, run_dir, sub, tag=f"-diff{seed}", problems=problems)
        dev = R.make_volume(sites, sub, "diff", size, None, ns)
        B.log(f"{B.mib(size)} of random data into the volume, then the initial sync")
        R.fill_random(dev, size)
        sites.agent.wait_applied("diff")
        t0 = time.time()
        sites.agent.cli("volume", "replicate", "diff", "--to", sites.to)
        sites.wait_caught_up("diff", timeout=7200)
        initial = {"s": time.time() - t0, "app": sites.target("diff")["wire_bytes"]}
        sites.agent.cli("volume", "unreplicate", "diff", "--to", sites.to)
        R.apply_changes(dev, plan, bs, seed)
        sites.agent.wait_applied("diff")
        drop_caches()
        w0 = sites.net.wire_bytes()
        t0 = time.time()
        sites.agent.cli("volume", "replicate", "diff", "--to", sites.to)
        sub.push("unreplicate diff", lambda: sites.agent.cli("volume", "unreplicate", "diff", "--to", sites.to,
                                                             check=False))
        compared_s = None  # when the comparison itself was done (the rest is shipping and acks)
        while True:
            t = sites.target("diff")
            d = t.get("diff_sync") or {}
            if compared_s is None and d.get("compared_bytes", 0) >= size:
                compared_s = time.time() - t0
            if t["state"] == "streaming" and t["acked_seq"] >= t["last_seq"] and not t["resyncing"]:
                break
            if time.time() - t0 > 7200:
                raise B.BenchError(f"differential sync did not finish: {t}")
            time.sleep(0.05)
        took = time.time() - t0
        link = sites.net.wire_bytes() - w0
        t = sites.target("diff")
        d = t.get("diff_sync") or {}
        out = {"s": took, "link": link, "records": t["wire_bytes"],
               "sums": d.get("sums_bytes", 0) + d.get("request_bytes", 0),
               "differing": d.get("differing_bytes", 0), "compared": d.get("compared_bytes", 0),
               "compared_s": compared_s if compared_s is not None else took,
               "initial": initial}
        out["app"] = out["records"] + out["sums"]
        B.log(f"continuum differential sync: {out}")
        vdev = sites.server.cli("view", "open", "prod1.diff", "--at", "latest").stdout.strip()
        try:
            out["equal"] = B.run(["cmp", "-n", str(size), dev, vdev], check=False, timeout=3600).returncode == 0
        finally:
            sites.server.cli("view", "close", vdev, check=False)
        if not out["equal"]:
            B.log("WARNING: replica differs from the primary after the differential sync")
        return out
    finally:
        sub.run_all()


def report(res, args):
    ch = res["changed"]
    rs, cs = res["rsync"], res["continuum"]
    med = lambda rows, k: statistics.median(r[k] for r in rows)  # noqa: E731
    r_s, c_s = med(rs, "s"), med(cs, "s")
    speed = r_s / c_s if c_s else 0
    c_link = med(cs, "link")
    ok = speed >= 2 and c_link <= 1.1 * ch and all(c["equal"] for c in cs)
    rows = [["rsync --inplace --no-whole-file (daemon)", f"{r_s:.2f}", B.mib(med(rs, "app")), B.mib(med(rs, "link")),
             f"{med(rs, 'link') / ch:.2f}", "1.00 (base)", "", ""],
            ["continuum: replicate to an existing replica", f"{c_s:.2f}", B.mib(med(cs, "app")), B.mib(c_link),
             f"{c_link / ch:.2f}", f"{speed:.1f}x", ">= 2x, wire <= 1.1", "PASS" if ok else "FAIL"]]
    title = (f"== differential sync: {args.image_size} random image, {res['blocks']} x {args.change_bs} blocks "
             f"changed ({args.fraction:.0%}, {B.mib(ch)}); medians of {len(cs)} round(s); replica equal: "
             f"{all(c['equal'] for c in cs)} ==")
    detail = [f"continuum app bytes = records {B.mib(med(cs, 'records'))} + checksums/requests "
              f"{B.mib(med(cs, 'sums'))}; resent {B.mib(med(cs, 'differing'))} of {B.mib(med(cs, 'compared'))} "
              f"compared; comparison done after {med(cs, 'compared_s'):.1f} s (the rest: shipping the resent blocks and "
              f"the target's acks); initial sync of the whole image took {med([c['initial'] for c in cs], 's'):.1f} s",
              "wire = veth tx+rx bytes of the source namespace (TCP/IP, TLS, both directions) during the run"]
    return B.table(["method", "seconds", "app bytes", "veth tx+rx", "wire/changed", "speed vs rsync", "target",
                    "verdict"], rows, title=title) + "\n" + "\n".join(detail)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--image-size", default="8G", help="image size (default 8G)")
    ap.add_argument("--change-bs", default="64K", help="size of each changed block (default 64K)")
    ap.add_argument("--fraction", type=float, default=0.01, help="fraction of blocks changed (default 0.01)")
    ap.add_argument("--rounds", type=int, default=1, help="rounds, rsync and Continuum alternating (default 1)")
    ap.add_argument("--dir", default="/var/tmp/continuum-bench", help="directory for images and state")
    ap.add_argument("--bin", help="continuum binary (default build-bench/continuum or $CONTINUUM_BIN)")
    ap.add_argument("--json", nargs="?", const="-", metavar="FILE",
                    help="write results as JSON to FILE (or stdout with no FILE, instead of the table)")
    args = ap.parse_args()

    def body(cleanup):
        if not shutil.which("rsync"):
            B.run(["apt-get", "install", "-y", "rsync"], timeout=900)
        B.require_root_and_tools("fio", "losetup", "ip", "rsync", "cmp")
        binary = B.find_binary(args.bin)
        run_dir = B.make_run_dir(args.dir, cleanup, "diff-")
        size, bs = B.parse_size(args.image_size), B.parse_size(args.change_bs)
        plan, _ = R.change_plan(size, bs, args.fraction)
        res = {"args": vars(args), "binary": binary, "changed": len(plan) * bs, "blocks": len(plan),
               "rsync": [], "continuum": []}
        problems = []
        for i in range(args.rounds):
            # Alternate which goes first, so drift in the host's load hits both.
            order = ("rsync", "continuum") if i % 2 == 0 else ("continuum", "rsync")
            for who in order:
                B.log(f"== round {i + 1}: {who} ==")
                if who == "rsync":
                    res["rsync"].append(R.rsync_baseline(run_dir, size, bs, plan))
                else:
                    res["continuum"].append(continuum_round(args, binary, run_dir, size, bs, plan, 7, problems))
        res["problems"] = problems
        if args.json:
            text = json.dumps(res, indent=2, default=str)
            if args.json == "-":
                print(text)
                return
            with open(args.json, "w") as f:
                f.write(text + "\n")
        print(report(res, args))
        print("\n== agent/server warnings/errors/events ==")
        print("\n".join(B.summarize(problems)))

    return B.main_wrapper(body)


if __name__ == "__main__":
    sys.exit(main())
