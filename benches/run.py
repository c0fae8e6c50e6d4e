"""Run the benchmarks and write their figures to benches/RESULTS.md.

``make bench`` runs the criterion benches first, then this script. Each benchmark module
has ``run() -> str`` returning its markdown section (with the command that made it);
sections live between markers so that re-running one benchmark
(``.venv/bin/python benches/run.py overhead``) keeps the others' last figures.
"""

from __future__ import annotations

import importlib
import os
import platform
import re
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
# name → module, in the order the sections appear.
BENCHES = {
    "core": "bench_core",
    "overhead": "bench_overhead",
    "resilience": "bench_resilience",
    "safety": "bench_safety",
    "classifier": "bench_classifier",
    "routing_e2e": "bench_routing_e2e",
}
HEADER = """# Benchmark results

Written by `make bench` (criterion, then `.venv/bin/python benches/run.py`); one section
per benchmark, each with the command that produced it. Speed is reported as ratios
against a baseline measured in the same run: these machines are shared and noisy.
"""


def _sections(text: str) -> dict[str, str]:
    found = {}
    for m in re.finditer(r"<!-- bench:(\w+) -->\n(.*?)<!-- /bench:\1 -->", text, re.S):
        found[m.group(1)] = m.group(2)
    return found


def main(argv: list[str]) -> int:
    sys.path.insert(0, str(HERE))
    wanted = argv or list(BENCHES)
    unknown = [w for w in wanted if w not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHES)}")
        return 2
    sections = _sections(RESULTS.read_text()) if RESULTS.exists() else {}
    for name in wanted:
        module_name = BENCHES[name]
        if not (HERE / f"{module_name}.py").exists():
            print(f"skip {name}: {module_name}.py not present")
            continue
        print(f"running {name} …", flush=True)
        started = time.monotonic()
        section = importlib.import_module(module_name).run()
        stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        load = os.getloadavg()[0]
        sections[name] = (
            f"{section.rstrip()}\n\n_Run {stamp} on {platform.machine()}, {os.cpu_count()} cores, "
            f"load average {load:.2f} at the end; took {time.monotonic() - started:.0f} s._\n\n"
        )
    body = [HEADER]
    for name in BENCHES:
        if name in sections:
            body.append(f"<!-- bench:{name} -->\n{sections[name]}<!-- /bench:{name} -->\n")
    RESULTS.write_text("\n".join(body))
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
