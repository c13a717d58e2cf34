#!/usr/bin/python3
"""Raw block-device throughput of a Continuum volume vs a plain loop device.

  (a) plain   : losetup --direct-io=on over a sparse file (baseline)
  (b) capture : continuum volume --no-cdp (write log only)
  (c) cdp     : continuum volume with the CDP undo journal

Workloads (fio, direct=1, no filesystem):
  seq1m    sequential 1 MiB writes, iodepth 4, time based
  rand4k   4 KiB random writes, fsync=1, iodepth 1, time based

Targets: capture >= 0.7x plain, cdp >= 0.4x plain; agent peak RSS (VmHWM)
<= cache size + 64 MiB.
"""
import argparse
import json
import os
import statistics
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402

TARGETS = {"capture": 0.7, "cdp": 0.4}
RSS_SLACK = 64 * B.MiB


def workloads(runtime):
    return [
        ("seq1m", "seq 1M write QD4", ["--rw=write", "--bs=1M", "--iodepth=4"]),
        ("rand4k", "rand 4K write fsync=1 QD1", ["--rw=randwrite", "--bs=4k", "--iodepth=1", "--fsync=1",
                                                 "--randrepeat=0"]),
    ]


def run_workloads(dev, size, runtime, agent=None, volume=None):
    res = {}
    for key, _, extra in workloads(runtime):
        r = B.fio(dev, key, extra + [f"--size={size}"], runtime=runtime)
        if agent:
            # Writes are acknowledged once queued; the backlog is not part of
            # fio's figure but it must not spill into the next workload.
            r["drain_s"] = agent.wait_applied(volume)
            r["rss"] = agent.mem().get("rss", 0)
        B.log(f"{key}: {r['mbps']:.1f} MB/s {r['iops']:.0f} IOPS")
        res[key] = r
    return res


def make_backing(path, size, prefill):
    (B.make_filled if prefill else B.make_sparse)(path, size)


def bench_plain(cleanup, run_dir, size, runtime, prefill):
    img = os.path.join(run_dir, "plain.img")
    make_backing(img, size, prefill)
    sub = B.Cleanup()
    try:
        dev = B.loop_attach(sub, img, direct_io=True)
        return {"results": run_workloads(dev, size, runtime), "device": dev}
    finally:
        sub.run_all()
        os.unlink(img)


def bench_volume(args, binary, run_dir, mode, problems, rnd=1):
    sub = B.Cleanup()
    img = os.path.join(run_dir, f"{mode}.img")
    agent = None
    try:
        make_backing(img, B.parse_size(args.size), args.prefill)
        agent = B.Agent(binary, run_dir, sub, tag=f"agent-{mode}-r{rnd}").start()
        extra = ["--no-cdp"] if mode == "capture" else []
        if args.journal_size and mode == "cdp":
            extra += ["--journal-size", args.journal_size]
        if args.cache_size:
            extra += ["--cache-size", args.cache_size]
        dev = agent.create_up(sub, mode, img, args.size, extra)
        idle = agent.mem().get("rss", 0)
        st = agent.status(mode)
        results = run_workloads(dev, args.size, args.runtime, agent, mode)
        st_after = agent.status(mode)
        mem = agent.mem()
        sub.run_all()  # volume down, stop agent (records the final VmHWM)
        mem = agent.peak or mem
        return {"results": results, "device": dev, "cache_size": st.get("cache_size", 128 * B.MiB),
                "rss_hwm": mem.get("hwm", 0), "rss_now": mem.get("rss", 0), "rss_idle": idle,
                "journal_bytes": st_after.get("journal_bytes"), "state": st_after.get("state")}
    finally:
        sub.run_all()
        if agent:
            problems += [f"[{mode} r{rnd}] {p}" for p in agent.problems()]
        if os.path.exists(img):
            os.unlink(img)


def merge(runs):
    """Median of each figure over rounds (max for memory); keeps every round's MB/s."""
    out = dict(runs[-1])
    out["results"] = {}
    for key in runs[0]["results"]:
        rs = [r["results"][key] for r in runs]
        out["results"][key] = {m: statistics.median(r[m] for r in rs) for m in rs[0]}
        out["results"][key]["rounds_mbps"] = [r["mbps"] for r in rs]
    for m in ("rss_hwm", "rss_now", "rss_idle"):
        if m in out:
            out[m] = max(r[m] for r in runs)
    return out


def report(data):
    base = data["plain"]["results"]
    rows = []
    for key, label, _ in workloads(0):
        for mode in ("plain", "capture", "cdp"):
            if mode not in data:
                continue
            r = data[mode]["results"][key]
            ratio = r["mbps"] / base[key]["mbps"] if base[key]["mbps"] else 0.0
            tgt = TARGETS.get(mode)
            rm = r["rounds_mbps"]
            spread = f"{min(rm):.0f}-{max(rm):.0f}" if len(rm) > 1 else "-"
            rows.append([label if mode == "plain" else "", mode, f"{r['mbps']:.1f}", spread, f"{r['iops']:.0f}",
                         f"{r['lat_us']:.0f}", f"{r['p99_us']:.0f}",
                         "1.00 (base)" if mode == "plain" else f"{ratio:.2f}",
                         f">= {tgt}" if tgt else "", B.verdict(ratio, tgt) if tgt else "",
                         f"{r['drain_s']:.1f}" if "drain_s" in r else ""])
    out = [B.table(["workload", "config", "MB/s", "min-max", "IOPS", "lat avg us", "p99 us", "ratio vs plain",
                    "target", "verdict", "drain s"], rows,
                   title=f"== volume_fio: size {data['size']}, runtime {data['runtime']} s per workload, "
                         f"median of {data['rounds']} round(s), "
                         f"{data['backing']} backings in {data['dir']} ==")]
    mrows = []
    for mode in ("capture", "cdp"):
        if mode not in data:
            continue
        d = data[mode]
        limit = d["cache_size"] + RSS_SLACK
        mrows.append([mode, B.mib(d["cache_size"]), B.mib(d["rss_idle"]), B.mib(d["rss_hwm"]), B.mib(limit),
                      f"{d['rss_hwm'] / limit:.2f}", B.verdict(d["rss_hwm"], limit, higher_is_better=False)])
    out.append("")
    out.append(B.table(["config", "cache size", "RSS volume up, idle", "agent VmHWM", "limit (cache+64M)",
                        "ratio", "verdict"], mrows, title="== agent peak memory (max over rounds) =="))
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="4G", help="device size (default 4G)")
    ap.add_argument("--runtime", type=int, default=10, help="seconds per workload (default 10)")
    ap.add_argument("--dir", default="/var/tmp/continuum-bench", help="directory for backing files and state")
    ap.add_argument("--bin", help="continuum binary (default build-bench/continuum or $CONTINUUM_BIN)")
    ap.add_argument("--cache-size", help="volume --cache-size (default: product default, 128M)")
    ap.add_argument("--journal-size", help="CDP volume --journal-size (default: product default)")
    ap.add_argument("--prefill", action="store_true",
                    help="fill every backing file with random data first (default: sparse files); then "
                         "CDP overwrites journal real before-images instead of zero markers")
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat plain/capture/cdp N times and report medians (default 1; use 3 on noisy hosts)")
    ap.add_argument("--only", choices=["capture", "cdp"], action="append",
                    help="run only these Continuum configs (the plain baseline always runs)")
    ap.add_argument("--json", nargs="?", const="-", metavar="FILE",
                    help="write results as JSON to FILE (or stdout with no FILE, instead of the table)")
    args = ap.parse_args()

    def body(cleanup):
        B.require_root_and_tools("fio", "losetup")
        binary = B.find_binary(args.bin)
        size = B.parse_size(args.size)
        if size % (1 << 20):
            raise B.BenchError("--size must be a multiple of 1 MiB")
        run_dir = B.make_run_dir(args.dir, cleanup, "fio-")
        data = {"size": args.size, "runtime": args.runtime, "dir": args.dir, "binary": binary,
                "backing": "prefilled" if args.prefill else "sparse", "rounds": args.rounds,
                "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
        problems = []
        modes = args.only or ["capture", "cdp"]
        runs = {m: [] for m in ["plain"] + modes}
        for rnd in range(1, args.rounds + 1):
            B.log(f"round {rnd}/{args.rounds}: (a) plain loop device")
            runs["plain"].append(bench_plain(cleanup, run_dir, size, args.runtime, args.prefill))
            for mode in modes:
                B.log(f"round {rnd}/{args.rounds}: ({'b' if mode == 'capture' else 'c'}) continuum volume: {mode}")
                runs[mode].append(bench_volume(args, binary, run_dir, mode, problems, rnd))
        data.update({m: merge(r) for m, r in runs.items()})
        data["agent_problems"] = problems
        if args.json:
            text = json.dumps(data, indent=2)
            if args.json == "-":
                print(text)
                return
            with open(args.json, "w") as f:
                f.write(text + "\n")
        print(report(data))
        print("\n== agent warnings/errors/events ==")
        print("\n".join(B.summarize(problems)))

    return B.main_wrapper(body)


if __name__ == "__main__":
    sys.exit(main())
