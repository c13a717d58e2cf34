"""The live NBD export of a protected volume, used by real NBD clients
(libnbd's nbdinfo/nbdcopy and QEMU's qemu-io). Writes through NBD go through
the same pipeline: they are journaled and visible on the loop device."""

import json
import os

from conftest import run


def test_nbd_export_with_real_clients(agent, tmp_path):
    agent.cli("volume", "create", "vm", "--backing", str(tmp_path / "vm.img"), "--size", "64M",
              "--journal-size", "128M")
    dev = agent.cli("volume", "up", "vm").stdout.strip()
    sock = tmp_path / "nbd.sock"
    r = agent.cli("volume", "export", "vm", "--nbd", f"unix:{sock}", json_out=True)
    assert r["address"] == f"unix:{sock}"
    uri = f"nbd+unix:///vm?socket={sock}"

    info = json.loads(run(["nbdinfo", "--json", uri]).stdout)
    exp = info["exports"][0]
    assert exp["export-size"] == 64 << 20
    assert exp["can_flush"] and exp["can_fua"] and exp["can_trim"]

    agent.cli("bookmark", "add", "vm", "empty")
    src = tmp_path / "src.bin"
    payload = os.urandom(16 << 20)
    src.write_bytes(payload + b"\0" * ((64 << 20) - len(payload)))
    run(["nbdcopy", str(src), uri])
    back = tmp_path / "back.bin"
    run(["nbdcopy", uri, str(back)])
    assert back.read_bytes()[: len(payload)] == payload

    # The same bytes through the kernel device (one pipeline, one view of the data).
    with open(dev, "rb", buffering=0) as f:
        assert f.read(len(payload)) == payload

    r = run(["qemu-io", "-f", "raw", "-c", "write -P 0xab 32M 1M", "-c", "flush",
             "-c", "read -P 0xab 32M 1M", "-c", "discard 40M 1M", "-c", "read -P 0 40M 1M", uri])
    assert "Pattern verification failed" not in r.stdout, r.stdout

    # NBD writes are in the journal: the view before them is still empty.
    view = agent.cli("view", "open", "vm", "--at", "empty").stdout.strip()
    try:
        with open(view, "rb", buffering=0) as f:
            assert f.read(1 << 20) == b"\0" * (1 << 20)
    finally:
        agent.cli("view", "close", view)


def test_nbd_export_errors(agent, tmp_path):
    r = agent.cli("volume", "export", "nope", "--nbd", f"unix:{tmp_path}/x.sock", check=False)
    assert "no volume 'nope'" in r.stderr
    agent.cli("volume", "create", "v", "--backing", str(tmp_path / "v.img"), "--size", "16M")
    r = agent.cli("volume", "export", "v", "--nbd", "not-an-address", check=False)
    assert r.returncode != 0 and r.stderr.strip()
