"""Writing a benchmark's JSON record (shared by the benchmarks in this folder)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_record(record: dict[str, Any], path: str | Path) -> Path:
    """Write ``record`` as indented JSON to ``path`` (parent folders created) and say where."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out}")
    return out
