#!/usr/bin/python3
"""PostgreSQL 15 pgbench TPS on ext4 over a Continuum CDP volume vs a plain loop.

  (a) plain : ext4 on losetup --direct-io=on over a sparse file (baseline)
  (b) cdp   : ext4 on a Continuum volume with the CDP undo journal

With --replicate, also (issue 3):
  (c) async : the CDP volume replicating async to a DR `continuum server` in another
              network namespace over a veth pair (TLS), as bench/replication_bench.py sets up
  (d) sync  : the same in sync mode (each fsync waits for the DR site)

For each: mkfs.ext4, mount, initdb (as postgres), pg_ctl start on a private
unix socket dir and a non-default port, pgbench -i -s SCALE, then TPC-B
(pgbench -c 4 -j 2 -T DURATION). Targets: cdp TPS >= 0.7x plain (issue 2);
async >= 0.85x plain, sync >= 0.7x plain (issue 3).
"""
import argparse
import json
import os
import re
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402

PGBIN = "/usr/lib/postgresql/15/bin"
TARGET = 0.7
TARGETS = {"cdp": 0.7, "async": 0.85, "sync": 0.7}


def as_pg(cmd, **kw):
    return B.run(["runuser", "-u", "postgres", "--"] + cmd, **kw)


def pg_cycle(cleanup, dev, work, args, tag):
    """mkfs + mount + initdb + start + pgbench on `dev`; returns figures."""
    mnt = os.path.join(work, f"mnt-{tag}")
    sockdir = os.path.join(work, f"sock-{tag}")
    os.makedirs(sockdir)
    os.chown(sockdir, *pg_ids())
    B.run(["mkfs.ext4", "-q", "-F", "-E", "nodiscard,lazy_itable_init=0,lazy_journal_init=0", dev], timeout=600)
    B.mount(cleanup, dev, mnt)
    data = os.path.join(mnt, "pgdata")
    os.makedirs(data)
    os.chown(data, *pg_ids())
    os.chmod(data, 0o700)
    as_pg([f"{PGBIN}/initdb", "-D", data, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C"],
          timeout=300)
    logfile = os.path.join(sockdir, "postgres.log")
    opts = f"-p {args.port} -k {sockdir} -c listen_addresses=''"
    as_pg([f"{PGBIN}/pg_ctl", "-D", data, "-l", logfile, "-o", opts, "-w", "-t", "120", "start"],
          timeout=180, start_new_session=True)
    cleanup.push(f"stop postgres ({tag})", lambda: pg_stop(data, logfile))
    conn = ["-h", sockdir, "-p", str(args.port), "-U", "postgres"]
    t0 = time.time()
    as_pg([f"{PGBIN}/pgbench", "-i", "-s", str(args.scale), "-q"] + conn + ["postgres"], timeout=1800)
    init_s = time.time() - t0
    as_pg([f"{PGBIN}/psql", "-q", "-c", "CHECKPOINT"] + conn + ["postgres"], timeout=600)
    p = as_pg([f"{PGBIN}/pgbench", "-c", str(args.clients), "-j", str(args.threads), "-T", str(args.time),
               "-P", "10"] + conn + ["postgres"], timeout=args.time * 4 + 300)
    m = re.search(r"tps = ([\d.]+) \(without initial connection time\)", p.stdout)
    lat = re.search(r"latency average = ([\d.]+) ms", p.stdout)
    tx = re.search(r"number of transactions actually processed: (\d+)", p.stdout)
    if not m:
        raise B.BenchError(f"cannot parse pgbench output:\n{p.stdout}\n{p.stderr}")
    for line in p.stderr.splitlines():
        if line.startswith("progress:"):
            B.log(f"  {tag}: {line}")
    return {"tps": float(m.group(1)), "latency_ms": float(lat.group(1)) if lat else 0.0,
            "transactions": int(tx.group(1)) if tx else 0, "init_s": init_s}


def pg_ids():
    import pwd
    pw = pwd.getpwnam("postgres")
    return pw.pw_uid, pw.pw_gid


def pg_stop(data, logfile):
    if not os.path.exists(os.path.join(data, "postmaster.pid")):
        return
    r = as_pg([f"{PGBIN}/pg_ctl", "-D", data, "-m", "fast", "-w", "-t", "120", "stop"], check=False, timeout=180)
    if r.returncode != 0:
        as_pg([f"{PGBIN}/pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"], check=False, timeout=60)


def bench_plain(work, args, size, rnd):
    sub = B.Cleanup()
    img = os.path.join(work, "plain.img")
    try:
        (B.make_filled if args.prefill else B.make_sparse)(img, size)
        dev = B.loop_attach(sub, img, direct_io=True)
        return pg_cycle(sub, dev, work, args, f"plain-r{rnd}")
    finally:
        sub.run_all()
        if os.path.exists(img):
            os.unlink(img)


def bench_cdp(work, args, size, binary, problems, rnd):
    sub = B.Cleanup()
    img = os.path.join(work, "cdp.img")
    agent = None
    try:
        (B.make_filled if args.prefill else B.make_sparse)(img, size)
        agent = B.Agent(binary, work, sub, tag=f"agent-cdp-r{rnd}").start()
        dev = agent.create_up(sub, "pg", img, args.size, ["--journal-size", args.journal_size])
        r = pg_cycle(sub, dev, work, args, f"cdp-r{rnd}")
        st = agent.status("pg")
        r.update({"journal_bytes": st.get("journal_bytes", 0), "bytes_written": st.get("bytes_written", 0),
                  "rss": agent.mem().get("rss", 0), "rss_hwm": agent.mem().get("hwm", 0),
                  "state": st.get("state")})
        return r
    finally:
        sub.run_all()
        if agent:
            problems += [f"[r{rnd}] {p}" for p in agent.problems()]
        if os.path.exists(img):
            os.unlink(img)


def bench_replicated(work, args, size, binary, problems, rnd, mode):
    """The CDP volume replicating to a DR server across a veth pair in `mode`."""
    import replication_bench as R
    sub = B.Cleanup()
    img = os.path.join(work, f"{mode}.img")
    try:
        (B.make_filled if args.prefill else B.make_sparse)(img, size)
        sites = R.Sites(binary, work, sub, tag=f"-pg-{mode}-r{rnd}", problems=problems, dr_disk=args.dr_disk)
        dev = sites.agent.create_up(sub, "pg", img, args.size, ["--journal-size", args.journal_size])
        sites.agent.cli("volume", "replicate", "pg", "--to", sites.to, "--mode", mode)
        sub.push("unreplicate pg", lambda: sites.agent.cli("volume", "unreplicate", "pg", "--to", sites.to,
                                                           check=False))
        sites.wait_caught_up("pg", timeout=300)
        r = pg_cycle(sub, dev, work, args, f"{mode}-r{rnd}")
        # What was still in flight when pgbench ended: the RPO an outage then would have cost.
        r["catchup_s"] = sites.wait_caught_up("pg", timeout=600)
        t = sites.target("pg")
        st = sites.agent.status("pg")
        r.update({"wire_bytes": t["wire_bytes"], "target_state": t["state"],
                  "journal_bytes": st.get("journal_bytes", 0), "bytes_written": st.get("bytes_written", 0),
                  "rss": sites.agent.mem().get("rss", 0), "rss_hwm": sites.agent.mem().get("hwm", 0),
                  "state": st.get("state")})
        return r
    finally:
        sub.run_all()
        if os.path.exists(img):
            os.unlink(img)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="4G", help="device size (default 4G)")
    ap.add_argument("--journal-size", default="2G", help="CDP journal size (default 2G)")
    ap.add_argument("--scale", type=int, default=20, help="pgbench -s (default 20)")
    ap.add_argument("--clients", type=int, default=4, help="pgbench -c (default 4)")
    ap.add_argument("--threads", type=int, default=2, help="pgbench -j (default 2)")
    ap.add_argument("--time", type=int, default=30, help="pgbench -T seconds (default 30)")
    ap.add_argument("--port", type=int, default=55432, help="postgres port (default 55432)")
    ap.add_argument("--dir", default="/var/tmp/continuum-bench", help="directory for backing files and state")
    ap.add_argument("--bin", help="continuum binary (default build-bench/continuum or $CONTINUUM_BIN)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="alternate plain/cdp N times and report the median round (default 1)")
    ap.add_argument("--prefill", action="store_true",
                    help="fill both backing files with random data first (default: sparse files)")
    ap.add_argument("--replicate", action="store_true",
                    help="also run the CDP volume replicating async and sync to a DR server (issue 3)")
    ap.add_argument("--dr-disk", choices=["shared", "tmpfs"], default="shared",
                    help="with --replicate: the DR server's state on the primary's disk (default) or on a tmpfs "
                         "standing in for the DR host's own disk")
    ap.add_argument("--json", nargs="?", const="-", metavar="FILE",
                    help="write results as JSON to FILE (or stdout with no FILE, instead of the table)")
    args = ap.parse_args()

    def body(cleanup):
        B.require_root_and_tools("losetup", "mkfs.ext4", "runuser", f"{PGBIN}/pg_ctl", f"{PGBIN}/pgbench")
        binary = B.find_binary(args.bin)
        size = B.parse_size(args.size)
        work = B.make_run_dir(args.dir, cleanup, "pg-")
        problems = []
        configs = ["plain", "cdp"] + (["async", "sync"] if args.replicate else [])
        runs = {k: [] for k in configs}
        for rnd in range(1, args.rounds + 1):
            B.log(f"round {rnd}/{args.rounds}: (a) postgres on ext4 on a plain loop device")
            runs["plain"].append(bench_plain(work, args, size, rnd))
            B.log(f"round {rnd}/{args.rounds}: (b) postgres on ext4 on a continuum CDP volume")
            runs["cdp"].append(bench_cdp(work, args, size, binary, problems, rnd))
            for mode in configs[2:]:
                B.log(f"round {rnd}/{args.rounds}: ({'c' if mode == 'async' else 'd'}) the CDP volume "
                      f"replicating {mode} to a DR server over veth")
                runs[mode].append(bench_replicated(work, args, size, binary, problems, rnd, mode))
        # Median round by TPS for each config (all rounds are kept in the JSON).
        med = {k: sorted(runs[k], key=lambda r: r["tps"])[(args.rounds - 1) // 2] for k in configs}
        plain, cdp = med["plain"], med["cdp"]
        for k in configs[1:]:
            med[k]["rss_hwm"] = max(r["rss_hwm"] for r in runs[k])
        ratio = cdp["tps"] / plain["tps"] if plain["tps"] else 0.0
        ratios = {k: med[k]["tps"] / plain["tps"] if plain["tps"] else 0.0 for k in configs[1:]}
        pairs = [c["tps"] / p["tps"] if p["tps"] else 0.0 for p, c in zip(runs["plain"], runs["cdp"])]
        data = {"size": args.size, "scale": args.scale, "clients": args.clients, "threads": args.threads,
                "time": args.time, "rounds": args.rounds, "dr_disk": args.dr_disk, "plain": plain, "cdp": cdp,
                "ratio": ratio,
                "target": TARGET, "round_ratios": pairs, "all_rounds": runs, "agent_problems": problems,
                "ratios": ratios, "targets": {k: TARGETS[k] for k in configs[1:]},
                **{k: med[k] for k in configs[2:]}}
        if args.json:
            text = json.dumps(data, indent=2)
            if args.json == "-":
                print(text)
                return
            with open(args.json, "w") as f:
                f.write(text + "\n")
        rows = []
        names = {"plain": "plain loop", "cdp": "continuum cdp", "async": "cdp + async to DR",
                 "sync": "cdp + sync to DR"}
        for k in configs:
            r, base = med[k], k == "plain"
            tps_all = [x["tps"] for x in runs[k]]
            rows.append([names[k], f"{r['tps']:.1f}", f"{min(tps_all):.0f}-{max(tps_all):.0f}" if args.rounds > 1 else "-",
                         f"{r['latency_ms']:.2f}", r["transactions"], f"{r['init_s']:.1f}",
                         f"{plain['init_s'] / r['init_s']:.2f}" if r["init_s"] else "",
                         "1.00 (base)" if base else f"{ratios[k]:.2f}", "" if base else f">= {TARGETS[k]}",
                         "" if base else B.verdict(ratios[k], TARGETS[k])])
        print(B.table(["config", "TPS", "min-max", "lat avg ms", "transactions", "init s", "init speed ratio",
                       "TPS ratio", "target", "verdict"], rows,
                      title=f"== pgbench: scale {args.scale}, -c {args.clients} -j {args.threads} -T {args.time}, "
                            f"{args.size} device, ext4, {'prefilled' if args.prefill else 'sparse'} backings, "
                            f"median of {args.rounds} round(s) =="))
        if args.rounds > 1:
            print(f"\nper-round TPS ratios (cdp/plain of the same round): {', '.join(f'{x:.2f}' for x in pairs)}")
        for k in configs[2:]:
            r = med[k]
            print(f"\n{k}: caught up {r['catchup_s']:.2f} s after pgbench ended, {B.mib(r['wire_bytes'])} on the wire, "
                  f"target {r['target_state']}")
        print(f"\ncdp volume after run: journal {B.mib(cdp['journal_bytes'])}, "
              f"{B.mib(cdp['bytes_written'])} written, state {cdp['state']}, "
              f"agent RSS {B.mib(cdp['rss'])} (VmHWM {B.mib(cdp['rss_hwm'])})")
        print("\n== agent warnings/errors/events ==")
        print("\n".join(B.summarize(problems)))

    return B.main_wrapper(body)


if __name__ == "__main__":
    sys.exit(main())
