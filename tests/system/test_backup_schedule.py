"""Scheduled backups (issue 4): the agent runs [[backup]] jobs from its TOML
config as children of its own binary (the standalone CLI's code). A path job
and a volume job with forget+prune run on `every` schedules; a job with a wrong
password fails with an event while the agent stays up; `backup jobs` lists
results and next runs; `backup jobs run` starts a job; a bad schedule stops the
agent at start with exit 2. The agent, volumes and loop devices are released
even when a test fails (conftest)."""

import json
import os
import time

from conftest import BIN, run


def events(agent, kind=None):
    out = [json.loads(l) for l in (agent.state / "events.jsonl").read_text().splitlines() if l.strip()]
    return [e for e in out if kind is None or e["kind"] == kind]


def wait_for(pred, timeout, what):
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.2)
    raise AssertionError("timed out waiting for " + what)


def job_events(agent, kind, job):
    return [e for e in events(agent, kind) if e["message"].startswith(job + ":")]


def repo_cli(repo, pw, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONTINUUM_")}
    r = run([BIN, "--json", *args, "--repo", str(repo), "--password-file", str(pw)], env=env)
    return json.loads(r.stdout)


def test_scheduled_jobs(make_agent, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("scheduled backups\n")
    bad_pw = tmp_path / "bad-pw"
    bad_pw.write_text("not the password\n")
    files_repo, vol_repo = tmp_path / "files-repo", tmp_path / "vol-repo"
    for r in (files_repo, vol_repo):
        repo_cli(r, pw, "repo", "init")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(5):
        (src / f"f{i}").write_bytes(os.urandom(4096))

    a = make_agent("a")
    cfg = a.root / "agent.toml"
    cfg.write_text(f"""
[[backup]]
name = "files"
source = "path:{src}"
repo = "{files_repo}"
password_file = "{pw}"
tags = ["sched", "files"]
schedule = "every 2s"

[[backup]]
name = "db"
source = "volume:db"
repo = "{vol_repo}"
password_file = "{pw}"
tags = ["sched"]
schedule = "every 3s"
forget = {{ keep_last = 2, prune = true }}

[[backup]]
name = "badpw"
source = "path:{src}"
repo = "{files_repo}"
password_file = "{bad_pw}"
schedule = "daily 03:00"
""")
    a.start(extra=["--config", str(cfg)])
    a.cli("volume", "create", "db", "--backing", str(tmp_path / "db.img"), "--size", "16M",
          "--journal-size", "64M")
    dev = a.cli("volume", "up", "db").stdout.strip()
    with open(dev, "r+b") as f:
        f.write(os.urandom(1 << 20))
        os.fsync(f.fileno())

    # The volume job runs at least three times (full, then incrementals; forget keeps 2).
    wait_for(lambda: len(job_events(a, "backup_job_done", "files")) >= 2 and
             len(job_events(a, "backup_job_done", "db")) >= 3, 30, "done events of both jobs")
    done = job_events(a, "backup_job_done", "db")[-1]
    assert "point " in done["message"] and "read " in done["message"], done

    files_points = repo_cli(files_repo, pw, "backup", "list")
    assert files_points and all(p["tags"] == ["sched", "files"] for p in files_points)
    assert all(p["sources"] == [str(src)] for p in files_points)

    # A run may be between backup and forget: wait until the newest result shows forget done.
    def forgotten():
        job = next(j for j in a.cli("backup", "jobs", json_out=True) if j["name"] == "db")
        r = job["last_result"]
        return job if r and r["status"] == "ok" and "forget" in r and not job["running"] else None
    db_job = wait_for(forgotten, 15, "a finished db run with forget")
    vol_points = repo_cli(vol_repo, pw, "backup", "list")
    assert len(vol_points) == 2, [(p["id"][:12], p["kind"]) for p in vol_points]
    assert all(p["tags"] == ["sched"] and p["sources"] == ["volume:db"] for p in vol_points)
    # Later runs are incremental against the first full point.
    assert any(p["kind"] == "incremental" for p in vol_points), [p["kind"] for p in vol_points]
    assert all(p["bytes_read"] < 16 << 20 for p in vol_points if p["kind"] == "incremental")

    jobs = {j["name"]: j for j in a.cli("backup", "jobs", json_out=True)}
    assert set(jobs) == {"files", "db", "badpw"}
    assert jobs["files"]["last_result"]["status"] == "ok" and jobs["files"]["last_run"]
    assert jobs["files"]["next_run"].endswith("Z") and jobs["files"]["schedule"] == "every 2s"
    assert db_job["last_result"]["point"] in [p["id"] for p in vol_points]
    assert jobs["badpw"]["last_result"] is None and jobs["badpw"]["next_run"].endswith("Z")
    assert jobs["badpw"]["last_run"] is None
    human = a.cli("backup", "jobs").stdout
    assert "files" in human and "every 2s" in human

    # A wrong password: the job fails with an event naming the problem; the agent stays up.
    r = a.cli("backup", "jobs", "run", "badpw", json_out=True)
    assert r == {"job": "badpw", "queued": True}
    failed = wait_for(lambda: job_events(a, "backup_job_failed", "badpw"), 15, "backup_job_failed")
    assert "wrong password" in failed[0]["message"], failed
    assert job_events(a, "backup_job_started", "badpw")
    bad = next(j for j in a.cli("backup", "jobs", json_out=True) if j["name"] == "badpw")
    assert bad["last_result"]["status"] == "failed" and "wrong password" in bad["last_result"]["message"]
    assert bad["last_result"]["exit_code"] != 0
    assert a.proc.poll() is None
    unknown = a.cli("backup", "jobs", "run", "nope", check=False)
    assert unknown.returncode != 0 and "no backup job named nope" in unknown.stderr

    a.cli("volume", "down", "db")
    assert a.stop() == 0

    # After a restart the jobs still show their last run and result (state file).
    a.start(extra=["--config", str(cfg)])
    after = {j["name"]: j for j in a.cli("backup", "jobs", json_out=True)}
    assert after["badpw"]["last_result"]["status"] == "failed", after["badpw"]
    assert after["badpw"]["last_run"] is not None
    assert after["db"]["last_run"] is not None and after["db"]["last_result"] is not None
    assert a.stop() == 0


def test_bad_schedule_stops_agent_start(make_agent, tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("x\n")
    repo = tmp_path / "repo"
    repo.mkdir()
    a = make_agent("a")
    cfg = a.root / "agent.toml"
    cfg.write_text(f"""
[[backup]]
name = "nightly"
source = "path:/etc"
repo = "{repo}"
password_file = "{pw}"
schedule = "daily 25:00"
""")
    r = run([BIN, "agent", "--state-dir", str(a.state), "--control", str(a.sock), "--config", str(cfg)],
            check=False, timeout=30)
    assert r.returncode == 2, r
    assert "backup job 'nightly': schedule:" in r.stderr and "hour 25" in r.stderr, r.stderr

    cfg.write_text(f"""
[[backup]]
name = "nightly"
source = "path:/etc"
repo = "{repo}"
password_file = "{tmp_path / 'missing-pw'}"
schedule = "daily 02:00"
colour = "blue"
""")
    r = run([BIN, "agent", "--state-dir", str(a.state), "--control", str(a.sock), "--config", str(cfg)],
            check=False, timeout=30)
    assert r.returncode == 2 and "backup job 'nightly': colour: unknown key" in r.stderr, r.stderr
