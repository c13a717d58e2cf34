"""Two hosts on one machine: network namespaces joined by a veth pair."""

import os
import subprocess

from conftest import run


class NetPair:
    """Namespaces <prefix>-src and <prefix>-dr with 10.77.<n>.1 and .2."""

    def __init__(self, tag: str):
        n = os.getpid() % 200 + 20
        self.src = f"ct{tag}s{os.getpid()}"
        self.dr = f"ct{tag}d{os.getpid()}"
        self.src_ip = f"10.77.{n}.1"
        self.dr_ip = f"10.77.{n}.2"
        self.veth_src = f"vs{os.getpid() % 100000}{tag}"[:15]
        self.veth_dr = f"vd{os.getpid() % 100000}{tag}"[:15]

    def up(self):
        run(["ip", "netns", "add", self.src])
        run(["ip", "netns", "add", self.dr])
        run(["ip", "link", "add", self.veth_src, "type", "veth", "peer", "name", self.veth_dr])
        run(["ip", "link", "set", self.veth_src, "netns", self.src])
        run(["ip", "link", "set", self.veth_dr, "netns", self.dr])
        for ns, dev, ip in ((self.src, self.veth_src, self.src_ip), (self.dr, self.veth_dr, self.dr_ip)):
            run(["ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev])
            run(["ip", "-n", ns, "link", "set", dev, "up"])
            run(["ip", "-n", ns, "link", "set", "lo", "up"])
        return self

    def cut(self):
        run(["ip", "-n", self.src, "link", "set", self.veth_src, "down"])

    def restore(self):
        run(["ip", "-n", self.src, "link", "set", self.veth_src, "up"])

    def down(self):
        for ns in (self.src, self.dr):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
