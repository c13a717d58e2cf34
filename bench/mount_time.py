#!/usr/bin/python3
"""Time to mount a multi-GiB image point from a backup repository (issue 4, instant mount).

Makes a sparse image (default 4G) with ext4 and --data (default 512M) of random files,
backs it up into a fresh repository, then times, --repeat (3) times:
  * `continuum mount ID` (CLI wall time until it prints the device; it includes opening the
    repository, i.e. the Argon2id key derivation) and an O_DIRECT read of the device's first
    MiB, compared with the image's first MiB; then `continuum view close DEVICE`;
  * `continuum ls ID` (attach read-only, mount the filesystem, list every file, clean up).
Target: mount + first-MiB read <= 1 s, whatever the image size. Baselines measured in the same
run: a CLI round trip that opens the repository (`backup list`) and a plain `losetup` attach.
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


def read_direct(path, n=B.MiB):
    buf = mmap.mmap(-1, n)
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        t0 = time.perf_counter()
        got = os.preadv(fd, [buf], 0)
        dt = time.perf_counter() - t0
        if got != n:
            raise B.BenchError(f"short read from {path}: {got} of {n} bytes")
        return dt, bytes(buf)
    finally:
        os.close(fd)
        buf.close()


def timed(fn):
    t0 = time.perf_counter()
    r = fn()
    return time.perf_counter() - t0, r


def alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except FileNotFoundError:
        return False


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="4G", help="image size (default 4G)")
    ap.add_argument("--data", default="512M", help="random file data written into the filesystem (default 512M)")
    ap.add_argument("--repeat", type=int, default=3, help="mount/close repetitions (default 3)")
    ap.add_argument("--dir", default="/var/tmp/continuum-bench", help="directory for the image and repository")
    ap.add_argument("--bin", help="continuum binary (default build-bench/continuum or $CONTINUUM_BIN)")
    ap.add_argument("--json", nargs="?", const="-", metavar="FILE",
                    help="write results as JSON to FILE (or stdout with no FILE, instead of the table)")
    args = ap.parse_args()

    def body(cleanup):
        B.require_root_and_tools("losetup", "mkfs.ext4", "mount")
        binary = B.find_binary(args.bin)
        work = B.make_run_dir(args.dir, cleanup, "mount-")
        img = os.path.join(work, "disk.img")
        repo = os.path.join(work, "repo")
        pw = os.path.join(work, "pw")
        with open(pw, "w") as f:
            f.write("bench password\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith("CONTINUUM_")}
        env.update({"CONTINUUM_REPO": repo})

        def cli(*a, check=True):
            creds = [] if a[0] == "view" else ["--password-file", pw]
            return B.run([binary, *a, *creds], check=check, env=env)

        B.make_sparse(img, B.parse_size(args.size))
        B.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", img])
        sub = B.Cleanup()
        try:
            dev = B.loop_attach(sub, img)
            mnt = os.path.join(work, "fill")
            B.mount(sub, dev, mnt)
            left, i = B.parse_size(args.data), 0
            while left > 0:
                n = min(left, 64 * B.MiB)
                os.makedirs(os.path.join(mnt, f"d{i % 4}"), exist_ok=True)
                with open(os.path.join(mnt, f"d{i % 4}", f"f{i}.bin"), "wb") as f:
                    f.write(os.urandom(n))
                left, i = left - n, i + 1
        finally:
            sub.run_all()
        files = i
        cli("repo", "init")
        backup_s, p = timed(lambda: cli("--json", "backup", "image", img))
        point = json.loads(p.stdout)["id"]
        with open(img, "rb") as f:
            first_mib = f.read(B.MiB)

        cli_rt = min(timed(lambda: cli("backup", "list"))[0] for _ in range(3))
        attach = []
        for _ in range(3):
            s = B.Cleanup()
            dt, _ = timed(lambda: B.loop_attach(s, img))
            attach.append(dt)
            s.run_all()

        mounts, reads, closes, content_ok = [], [], [], True
        for n in range(args.repeat):
            s = B.Cleanup()
            try:
                dt, r = timed(lambda: cli("--json", "mount", point))
                rec = json.loads(r.stdout)
                vdev = rec["device"]

                def kill(pid=rec["pid"]):
                    if alive(pid):
                        os.kill(pid, 15)
                s.push(f"stop mount server {rec['pid']}", kill)
                s.push(f"view close {vdev}", lambda: cli("view", "close", vdev))
                rdt, data = read_direct(vdev)
                mounts.append(dt)
                reads.append(rdt)
                if data != first_mib:
                    content_ok = False
                    B.log(f"{vdev}: first MiB does NOT match the image")
                B.log(f"mount #{n + 1}: {dt * 1000:.0f} ms, first MiB read {rdt * 1000:.1f} ms")
                desc = s.steps.pop()
                cdt, _ = timed(desc[1])
                closes.append(cdt)
            finally:
                s.run_all()
        ls_s, ls = timed(lambda: cli("--json", "ls", point))
        listed = json.loads(ls.stdout)
        if sum(1 for e in listed if e["type"] == "file" and e["path"].endswith(".bin")) != files:
            content_ok = False
            B.log(f"ls listed {len(listed)} entries, expected {files} data files among them")

        total = [m + r for m, r in zip(mounts, reads)]
        worst = max(total)
        data = {"size": args.size, "data": args.data, "backup_s": backup_s, "mount_s": mounts,
                "first_mib_read_s": reads, "close_s": closes, "mount_plus_read_s": total, "ls_s": ls_s,
                "ls_entries": len(listed), "cli_roundtrip_s": cli_rt, "plain_loop_attach_s": min(attach),
                "content_ok": content_ok, "target_s": TARGET_S}
        if args.json:
            text = json.dumps(data, indent=2)
            if args.json == "-":
                print(text)
                return
            with open(args.json, "w") as f:
                f.write(text + "\n")

        def ms(x):
            return f"{x * 1000:.1f}"
        rows = [
            ["CLI round trip (backup list)", ms(cli_rt), "1.00 (base)", "", ""],
            ["plain losetup attach", ms(min(attach)), f"{min(attach) / cli_rt:.2f}", "", ""],
            ["mount, first", ms(mounts[0]), f"{mounts[0] / cli_rt:.2f}", "", ""],
            ["mount, median", ms(statistics.median(mounts)), f"{statistics.median(mounts) / cli_rt:.2f}", "", ""],
            ["first MiB read (median)", ms(statistics.median(reads)), "", "", ""],
            ["view close (median)", ms(statistics.median(closes)), f"{statistics.median(closes) / cli_rt:.2f}", "", ""],
            ["mount + first MiB, worst", ms(worst), f"{worst / cli_rt:.2f}", f"<= {TARGET_S * 1000:.0f}",
             B.verdict(worst, TARGET_S, higher_is_better=False)],
            [f"ls ({len(listed)} entries)", ms(ls_s), f"{ls_s / cli_rt:.2f}", f"<= {TARGET_S * 1000:.0f}",
             B.verdict(ls_s, TARGET_S, higher_is_better=False)],
        ]
        print(B.table(["step", "ms", "ratio vs CLI round trip", "target ms", "verdict"], rows,
                      title=f"== mount_time: {args.size} ext4 image point with {args.data} of files "
                            f"(backup took {backup_s:.1f} s) =="))
        print(f"device content: {'OK' if content_ok else 'MISMATCH'}")
        print(f"RESULT: {B.verdict(worst, TARGET_S, higher_is_better=False)}")
        if not content_ok:
            raise B.BenchError("a mounted point did not show the image")

    return B.main_wrapper(body)


if __name__ == "__main__":
    sys.exit(main())
