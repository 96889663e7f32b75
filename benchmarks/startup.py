"""Start-up benchmark: wall time of `complai --version`, `complai --help` and `complai status --json` (in a
fresh workspace), median and range of N runs each, against the bare interpreter (`python -c pass`) in the
same run, and optionally against another source tree (`--before`, e.g. an export of the previous
release's src/), alternating runs so both see the same machine load. Also the slowest imports of
`--version` by `python -X importtime`.

    python benchmarks/startup.py [--runs 10] [--before /path/to/old/src] [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from common import write_results

console = Console()
SRC = Path(__file__).resolve().parents[1] / "src"
COMMANDS = {"--version": ["--version"], "--help": ["--help"], "status --json": ["status", "--json"]}


def _run(argv: list[str], src: Path, workspace: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(src), "COMPLAI_WORKSPACE": str(workspace), "COLUMNS": "120"}
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def _cli(args: list[str]) -> list[str]:
    return [sys.executable, "-c", "from complai.cli.main import main; main()", *args]


def slowest_imports(src: Path, n: int = 8) -> list[tuple[str, float]]:
    """The top-level imports `--version` spends most on (cumulative seconds, `-X importtime`)."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    err = subprocess.run(
        [sys.executable, "-X", "importtime", *_cli(["--version"])[1:]],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    rows = []
    for line in err.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, raw = line.split(":", 1)[1].split("|")
        if len(raw) - len(raw.lstrip()) == 1:  # nested imports are indented further
            rows.append((raw.strip(), int(cumulative) / 1e6))
    return sorted(rows, key=lambda r: -r[1])[:n]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--before", type=Path, help="Another tree's src/ directory to compare against.")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/startup.json"))
    args = ap.parse_args()
    trees = {"this": SRC, **({"before": args.before.resolve()} if args.before else {})}
    tmp = Path(tempfile.mkdtemp(prefix="complai-startup-bench-"))
    workspaces = {tree: tmp / tree for tree in trees}  # each tree's own: an older one refuses a newer schema
    for tree, src in trees.items():
        subprocess.run(
            _cli(["init", "--workspace", str(workspaces[tree])]),
            env={**os.environ, "PYTHONPATH": str(src)},
            stdout=subprocess.DEVNULL,
            check=True,
        )
    times: dict[str, list[float]] = {"python -c pass": []}
    for tree in trees:
        for name in COMMANDS:
            times[f"{tree}: {name}"] = []
    for _ in range(args.runs):  # alternate, so every command sees the same load
        times["python -c pass"].append(_run([sys.executable, "-c", "pass"], SRC, workspaces["this"]))
        for name, argv in COMMANDS.items():
            for tree, src in trees.items():
                times[f"{tree}: {name}"].append(_run(_cli(argv), src, workspaces[tree]))
    base = statistics.median(times["python -c pass"])
    t = Table("command", "median s", "range s", "x python", title=f"Start-up, {args.runs} runs each")
    result: dict[str, Any] = {"runs": args.runs, "times": {}}
    for name, values in times.items():
        median = statistics.median(values)
        t.add_row(name, f"{median:.3f}", f"{min(values):.3f}-{max(values):.3f}", f"{median / base:.1f}")
        result["times"][name] = {"median": median, "min": min(values), "max": max(values), "ratio": median / base}
    console.print(t)
    imports = Table("module", "cumulative s", title="Slowest imports of --version (this tree)")
    result["imports"] = slowest_imports(SRC)
    for name, secs in result["imports"]:
        imports.add_row(name, f"{secs:.3f}")
    console.print(imports)
    write_results(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
