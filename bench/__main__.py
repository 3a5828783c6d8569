"""Run the benchmarks: ``python -m bench [name ...]`` (``nox -s bench -- smoke``).

Each ``bench/bench_<name>.py`` has a ``main() -> dict`` that measures its subject against a
baseline in the same run, prints a table, and returns the numbers; all results are written to
``bench/results.json`` (not committed) for machines.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main(argv: list[str]) -> int:
    names = sorted(
        m.name[len("bench_") :] for m in pkgutil.iter_modules([str(HERE)]) if m.name.startswith("bench_")
    )
    chosen = argv or names
    unknown = set(chosen) - set(names)
    if unknown:
        print(
            f"unknown benchmark(s): {', '.join(sorted(unknown))}; available: {', '.join(names)}",
            file=sys.stderr,
        )
        return 2
    results = {}
    for name in chosen:
        print(f"\n=== bench {name} ===", flush=True)
        start = time.monotonic()
        module = importlib.import_module(f"bench.bench_{name}")
        results[name] = module.main()
        print(f"=== bench {name}: {time.monotonic() - start:.0f}s ===", flush=True)
    out = HERE / "results.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    print(f"\nresults: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
