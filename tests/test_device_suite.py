"""The prepared GPU run: its jobs parse, the default set fits the 8-minute budget, the dry run says
what travels, and the runner keeps to each job's limit and packs what the jobs wrote."""

from __future__ import annotations

import importlib
import tarfile
from pathlib import Path

import pytest

from benchmarks import device_suite as ds


def test_every_job_is_a_command_line_its_module_accepts() -> None:
    for job in ds.JOBS:
        module, args = job.argv[1], list(job.argv[2:])
        if module == "pytest":
            continue
        importlib.import_module(module).build_parser().parse_args(args)


def test_the_default_jobs_fit_eight_minutes_and_the_long_ones_are_opt_in() -> None:
    default = ds.selected(["default"])
    assert default and not any(j.long for j in default) and sum(j.minutes for j in default) <= 8
    assert [j.name for j in ds.selected(["ddpm-cfg"])] == ["ddpm-cfg"]
    assert ds.carry_for(ds.selected(["ddpm-cfg"]))[-1] == "eval/resume"


def test_the_dry_run_counts_what_travels_and_what_staging_leaves() -> None:
    plan = ds.dry_run(ds.selected(["default"]), 8.0)
    assert plan["travel_mib_after_stage"] < plan["travel_mib"] and not plan["missing_weights"]
    assert plan["minutes_planned"] <= plan["max_minutes"]


def test_the_runner_keeps_time_limits_skips_what_does_not_fit_and_packs_outputs(tmp_path: Path,
                                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    out = "runs/test_device_suite_output.txt"
    jobs = [ds.Job("writes", ("-c", f"open({out!r}, 'w').write('done')"), 0.2, (out,)),
            ds.Job("hangs", ("-c", "import time; time.sleep(60)"), 0.02),
            ds.Job("too-long", ("-c", "pass"), 5.0)]
    record = ds.run_jobs(jobs, minutes=1.0, pack=tmp_path)
    status = {row["job"]: row["status"] for row in record["summary"]}
    assert status["writes"] == "ok" and status["hangs"].startswith("timed out") and status["too-long"].startswith("skipped")
    with tarfile.open(tmp_path / "results.tgz") as tar:
        names = tar.getnames()
    assert out in names and "runs/device_logs/summary.json" in names
