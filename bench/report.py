"""Print the pipeline bench table from a pytest-benchmark JSON file.

Usage: ``python bench/report.py [bench/results/latest.json]``
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import format_table  # noqa: E402


def main(argv: list[str]) -> int:
    path = Path(argv[1] if len(argv) > 1 else Path(__file__).parent / "results" / "latest.json")
    data = json.loads(path.read_text())
    rows = [b["extra_info"] for b in data.get("benchmarks", [])
            if b.get("extra_info", {}).get("stages_ms")]
    if not rows:
        print(f"no pipeline results in {path}", file=sys.stderr)
        return 1
    machine = data.get("machine_info", {})
    print(f"# {machine.get('cpu', {}).get('brand_raw', '?')}, "
          f"{machine.get('cpu', {}).get('count', '?')} cpus, {data.get('datetime', '')}")
    print(format_table(sorted(rows, key=lambda r: r["pixels"])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
