"""bench/jtsim.py keeps working: the real JobTracker, driven by simulated
tasktrackers at a small scale, runs a job to the end with every map and
every reduce done exactly once (the simulation's own count, checked again
here from its figures), and the figures the benchmark reports are there.

Small because the scheduler's work per event grows with pending tasks x
workers (see docs/architecture.md, "The jobtracker at cluster scale"):
50 workers and 2,000 maps take over a minute; 300 maps take a few seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
WORKERS, MAPS, SLOTS = 50, 300, 2


def test_a_small_cluster_runs_the_job_once_per_task(tmp_path: Path) -> None:
    out = tmp_path / "jtsim.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "jtsim.py"), "--workers", str(WORKERS),
         "--maps", str(MAPS), "--slots", str(SLOTS), "--workdir", str(tmp_path),
         "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    reduces = WORKERS * SLOTS  # the default: one reducer per slot
    assert r["job"] == {"id": r["job"]["id"], "maps": MAPS, "reduces": reduces,
                        "state": "succeeded", "stopped_early": None}
    check = r["check"]
    # Every index reported done once, and no report beyond those.
    assert check["maps_done_once"] == check["maps_done_reports"] == MAPS
    assert check["reduces_done_once"] == check["reduces_done_reports"] == reduces
    assert check["maps_launched"] == MAPS and check["reduces_launched"] == reduces
    # What the jobtracker told the workers adds up too.
    outbound = r["outbound"]
    assert outbound["launch_map"] == MAPS and outbound["launch_reduce"] == reduces
    assert outbound["init_job"] == outbound["destroy_job"] == WORKERS
    calls = r["calls"]
    assert calls["register"]["calls"] == WORKERS
    assert calls["map done"]["calls"] == MAPS and calls["reduce done"]["calls"] == reduces
    assert calls["may commit"]["calls"] == reduces
    # Every worker heartbeat about once a second of the simulated job: at
    # 50 workers the jobtracker asks for no longer interval than their own.
    beats = calls["heartbeat"]["calls"]
    assert WORKERS * (r["sim_seconds"] - 1) <= beats <= WORKERS * (r["sim_seconds"] + 1)
    assert r["heartbeats_per_second"] == beats / r["sim_seconds"]
    # PB's cost of receiving them is in the "% of a core" with PB.
    assert r["loop_core_fraction_with_pb"] == pytest.approx(
        r["loop_core_fraction"] + r["pb_heartbeat_us"] * 1e-6 * r["heartbeats_per_second"])
    # And with every call's: each received, each made (announcements included).
    received = sum(calls[k]["calls"] for k in ("heartbeat", "map done", "reduce done",
                                              "may commit", "status"))
    made = sum(outbound.values())
    assert r["loop_core_fraction_with_every_pb_call"] == pytest.approx(
        r["loop_core_fraction"] + (r["pb_call_in_us"] * received
                                   + r["pb_call_out_us"] * made) * 1e-6 / r["sim_seconds"])
    assert calls["heartbeat"]["us_per_call"] > 0 and r["cpu_per_scheduled_task_us"] > 0
    assert sum(w["map done"]["calls"] for w in r["deciles"][:10]) == MAPS
    assert r["stages"]["finished"]["rss"] > 0
    # No temporary file left behind.
    assert [p.name for p in tmp_path.iterdir()] == ["jtsim.json"]


def test_the_workers_follow_the_interval_the_jobtracker_asks(tmp_path: Path) -> None:
    """At 25 heartbeats a second, 50 workers heartbeat every 2 s, not every second."""
    out = tmp_path / "jtsim.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "jtsim.py"), "--workers", str(WORKERS),
         "--maps", "100", "--heartbeats-per-second", "25", "--workdir", str(tmp_path),
         "--json", str(out)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    r = json.loads(out.read_text())
    assert r["job"]["state"] == "succeeded"
    # The first round at their own 1 s, then every 2 s.
    assert r["calls"]["heartbeat"]["calls"] <= WORKERS * (r["sim_seconds"] / 2 + 2)
    assert 20 <= r["heartbeats_per_second"] <= 30
