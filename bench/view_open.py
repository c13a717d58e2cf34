#!/usr/bin/python3
"""Time to open a point-in-time view behind ~1 GiB of undo journal.

Creates a CDP volume (default 4G, --journal-size 2G) on a backing file pre-filled
with random data (zero old blocks cost the undo journal almost nothing), writes a known pattern
to the first MiB, adds bookmark 'before', overwrites the first MiB and then
writes ~1 GiB of random 4 KiB..1 MiB writes (fio bssplit) through the device.
Then times `continuum view open NAME --at before` (CLI wall time until it
prints the device) and an O_DIRECT read of the view's first MiB, and checks
that the view shows the pre-bookmark pattern.

Target: view open + first-MiB read <= 1 s. Baselines measured in the same run:
a CLI round trip (`volume status`), and attaching a plain loop device.
"""
import argparse
import json
import mmap
import os
import statistics
import sys
import time

sys.dont_write_bytecode = True  # keep the source tree clean
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchlib as B  # noqa: E402

TARGET_S = 1.0
PATTERN = bytes(range(256)) * 4096  # 1 MiB


def write_direct(dev, data, offset=0):
    buf = mmap.mmap(-1, len(data))
    buf.write(data)
    fd = os.open(dev, os.O_WRONLY | os.O_DIRECT)
    try:
        os.pwritev(fd, [buf], offset)
        os.fsync(fd)
    finally:
        os.close(fd)
        buf.close()


def read_direct(dev, n=B.MiB, offset=0):
    buf = mmap.mmap(-1, n)
    fd = os.open(dev, os.O_RDONLY | os.O_DIRECT)
    try:
        t0 = time.perf_counter()
        got = os.preadv(fd, [buf], offset)
        dt = time.perf_counter() - t0
        if got != n:
            raise B.BenchError(f"short read from {dev}: {got} of {n} bytes")
        return dt, bytes(buf)
    finally:
        os.close(fd)
        buf.close()


def timed(fn):
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="4G", help="volume size (default 4G)")
    ap.add_argument("--journal-size", default="2G", help="CDP journal size (default 2G)")
    ap.add_argument("--write", default="1G", help="bytes of random writes after the bookmark (default 1G)")
    ap.add_argument("--repeat", type=int, default=3, help="view open/close repetitions (default 3)")
    ap.add_argument("--dir", default="/var/tmp/continuum-bench", help="directory for backing files and state")
    ap.add_argument("--bin", help="continuum binary (default build-bench/continuum or $CONTINUUM_BIN)")
    ap.add_argument("--json", nargs="?", const="-", metavar="FILE",
                    help="write results as JSON to FILE (or stdout with no FILE, instead of the table)")
    args = ap.parse_args()

    def body(cleanup):
        B.require_root_and_tools("fio", "losetup")
        binary = B.find_binary(args.bin)
        work = B.make_run_dir(args.dir, cleanup, "view-")
        name = "viewbench"
        img = os.path.join(work, "vol.img")
        B.log("pre-filling the backing with random data (so the undo journal holds real before-images)")
        B.make_filled(img, B.parse_size(args.size))
        agent = B.Agent(binary, work, cleanup).start()
        dev = agent.create_up(cleanup, name, img, args.size,
                              ["--journal-size", args.journal_size])
        write_direct(dev, PATTERN)
        agent.cli("bookmark", "add", name, "before")
        write_direct(dev, b"\xee" * B.MiB)
        t0 = time.perf_counter()
        fio = B.fio(dev, "fill", ["--rw=randwrite", "--bssplit=4k/25:64k/25:256k/25:1m/25", "--iodepth=4",
                                  f"--io_size={args.write}", f"--size={args.size}", "--randrepeat=0"],
                    timeout=3600)
        fill_s = time.perf_counter() - t0
        drain_s = agent.wait_applied(name)
        st = agent.status(name)
        B.log(f"wrote {B.mib(fio['bytes'])} in {fill_s:.1f}s (+{drain_s:.1f}s drain); "
              f"journal {B.mib(st.get('journal_bytes', 0))}")

        # Baselines: CLI round trip and a plain loop attach (what a view needs at least).
        cli_rt = min(timed(lambda: agent.cli("volume", "status", name, "--json", quiet=True))[0]
                     for _ in range(5))
        plain_img = os.path.join(work, "plain.img")
        B.make_sparse(plain_img, B.parse_size(args.size))
        attach = []
        for _ in range(3):
            sub = B.Cleanup()
            dt, pdev = timed(lambda: B.loop_attach(sub, plain_img))
            attach.append(dt)
            sub.run_all()
        live_read_s, _ = read_direct(dev)

        opens, reads, closes, rss = [], [], [], []
        content_ok = True
        for i in range(args.repeat):
            sub = B.Cleanup()
            try:
                dt, p = timed(lambda: agent.cli("view", "open", name, "--at", "before"))
                vdev = p.stdout.strip()
                if not vdev.startswith("/dev/"):
                    raise B.BenchError(f"'view open' printed '{vdev}', expected a device")
                sub.push(f"view close {vdev}", lambda: agent.cli("view", "close", vdev))
                rdt, data = read_direct(vdev)
                opens.append(dt)
                reads.append(rdt)
                rss.append(agent.mem())
                if data != PATTERN:
                    content_ok = False
                    B.log(f"view {vdev}: first MiB does NOT match the pre-bookmark pattern")
                B.log(f"view open #{i + 1}: {dt * 1000:.0f} ms, first MiB read {rdt * 1000:.1f} ms")
                desc = sub.steps.pop()
                cdt, _ = timed(desc[1])
                closes.append(cdt)
            finally:
                sub.run_all()
        mem = agent.mem()
        total = [o + r for o, r in zip(opens, reads)]
        data = {"size": args.size, "journal_size": args.journal_size, "written_bytes": fio["bytes"],
                "fill_mbps": fio["mbps"], "fill_s": fill_s, "drain_s": drain_s,
                "journal_bytes": st.get("journal_bytes", 0), "view_open_s": opens, "first_mib_read_s": reads,
                "view_close_s": closes, "open_plus_read_s": total, "cli_roundtrip_s": cli_rt,
                "plain_loop_attach_s": min(attach), "live_first_mib_read_s": live_read_s,
                "content_ok": content_ok, "agent_rss": mem.get("rss", 0), "agent_hwm": mem.get("hwm", 0),
                "target_s": TARGET_S}
        problems = agent.problems()
        data["agent_problems"] = problems
        if args.json:
            text = json.dumps(data, indent=2)
            if args.json == "-":
                print(text)
                return
            with open(args.json, "w") as f:
                f.write(text + "\n")

        def ms(x):
            return f"{x * 1000:.1f}"
        worst = max(total)
        rows = [
            ["CLI round trip (volume status)", ms(cli_rt), "1.00 (base)", "", ""],
            ["plain losetup attach", ms(min(attach)), f"{min(attach) / cli_rt:.2f}", "", ""],
            ["view open, first", ms(opens[0]), f"{opens[0] / cli_rt:.1f}", "", ""],
            ["view open, median", ms(statistics.median(opens)), f"{statistics.median(opens) / cli_rt:.1f}", "", ""],
            ["first MiB read, live volume", ms(live_read_s), "", "", ""],
            ["first MiB read, view (median)", ms(statistics.median(reads)),
             f"{statistics.median(reads) / live_read_s:.1f}x live", "", ""],
            ["view close (median)", ms(statistics.median(closes)), f"{statistics.median(closes) / cli_rt:.1f}", "", ""],
            ["open + first MiB, worst", ms(worst), f"{worst / cli_rt:.1f}", f"<= {TARGET_S * 1000:.0f}",
             B.verdict(worst, TARGET_S, higher_is_better=False)],
        ]
        print(B.table(["step", "ms", "ratio vs CLI round trip", "target ms", "verdict"], rows,
                      title=f"== view_open: {args.size} volume, {B.mib(fio['bytes'])} random writes after the "
                            f"bookmark, undo journal {B.mib(st.get('journal_bytes', 0))} =="))
        print(f"\nfill: {fio['mbps']:.1f} MB/s for {fill_s:.1f} s, then {drain_s:.1f} s until applied")
        print(f"view content as of bookmark: {'OK' if content_ok else 'MISMATCH'}")
        print(f"agent RSS {B.mib(mem.get('rss', 0))} (VmHWM {B.mib(mem.get('hwm', 0))}); "
              f"RSS right after each open: {', '.join(B.mib(m.get('rss', 0)) for m in rss)}")
        print("\n== agent warnings/errors/events ==")
        print("\n".join(B.summarize(problems)))
        if not content_ok:
            raise B.BenchError("a view did not show the volume as of its bookmark")

    return B.main_wrapper(body)


if __name__ == "__main__":
    sys.exit(main())
