"""Writing a benchmark's JSON record (shared by the benchmarks in this folder)."""

from __future__ import annotations

import json
import multiprocessing as mp
import resource
from pathlib import Path
from typing import Any, Callable


def write_record(record: dict[str, Any], path: str | Path) -> Path:
    """Write ``record`` as indented JSON to ``path`` (parent folders created) and say where."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return out


def run_isolated(target: Callable[..., None], *args: Any) -> dict[str, Any]:
    """Run ``target(*args, queue)`` in a fresh spawned process (so its peak memory is its own) and
    return the dict it put on the queue, or an error row if the process died without one."""
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, queue))
    proc.start()
    proc.join()
    return queue.get() if not queue.empty() else {"ok": False, "error": f"process exited with {proc.exitcode}"}


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
