"""What tracking every training run in MLflow costs: finance training of the finance
benchmark's size (`--rows`, default 1,000,000 synthetic applicants), as a user runs it
(`verticals train finance ...`, a fresh process each time), with tracking on (the embedded
SQLite store) and off (`tracking=none`), alternated, best of `--repeats`.

The first run in a new store also creates its tables (once per store); it is reported on
its own. Each tracked run's log says how long training waited for the store (MLflow's
import and the store's opening run in a thread while the data loads) and how long logging
the results took; both are reported.

    python benchmarks/tracking.py [--rows 1000000] [--repeats 2] [--device auto] [--out f.json]
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common
from common import say

WAITED = re.compile(r"tracking: run \S+ in .* \(data \S+, ([\d.]+) s\)")
LOGGED = re.compile(r"tracking: run \S+ logged in ([\d.]+) s")


def train(root: Path, rows: int, device: str, tracking: bool) -> dict[str, Any]:
    """One `verticals train finance` in a fresh process: its wall time, and what the run's
    log says tracking cost."""
    args = [
        sys.executable, "-m", "verticals", "train", "finance", "data=synthetic",
        f"data.n_rows={rows}", "model.num_boost_round=300", "model.early_stopping_rounds=50",
        f"trainer.device={device}", *([] if tracking else ["tracking=none"]),
    ]  # fmt: skip
    started = time.perf_counter()
    done = subprocess.run(args, cwd=root, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"training failed:\n{done.stderr[-3000:]}")
    run = Path(done.stdout.split("run:")[1].split()[0])
    text = (run if run.is_absolute() else root / run).joinpath("train.log").read_text()
    waited, logged = WAITED.search(text), LOGGED.search(text)
    return {
        "seconds": seconds,
        "waited_s": float(waited.group(1)) if waited else None,
        "logged_s": float(logged.group(1)) if logged else None,
    }


def main() -> None:
    parser = common.parser(__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-tracking-") as tmp:
        root = Path(tmp)
        say(f"finance training, {args.rows:,} rows, tracking on vs off ({args.repeats} each)")
        first = train(root, args.rows, args.device, tracking=True)
        say(f"  first run in a new store: {first['seconds']:.1f} s")
        runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
        for i in range(args.repeats):
            for mode in ("off", "on") if i % 2 == 0 else ("on", "off"):
                runs[mode].append(train(root, args.rows, args.device, tracking=mode == "on"))
                say(f"  {mode:>3}: {runs[mode][-1]['seconds']:.1f} s")
    off = min(r["seconds"] for r in runs["off"])
    on_best = min(runs["on"], key=lambda r: r["seconds"])
    overhead = (on_best["seconds"] - off) / off
    results = {
        "rows": args.rows,
        "off_s": off,
        "on_s": on_best["seconds"],
        "overhead": overhead,
        "waited_for_store_s": on_best["waited_s"],
        "logging_s": on_best["logged_s"],
        "first_run_new_store_s": first["seconds"],
        "first_run_overhead": (first["seconds"] - off) / off,
        "runs": runs,
    }
    say(f"tracking off: {off:.1f} s; on: {on_best['seconds']:.1f} s -> overhead "
        f"{overhead:+.1%} (limit 5%)")  # fmt: skip
    say(f"  training waited {on_best['waited_s']:.2f} s for the store, logging took "
        f"{on_best['logged_s']:.2f} s")  # fmt: skip
    say(f"  the first run in a new store: {results['first_run_overhead']:+.1%}")
    common.write_figures(args.out, results)


if __name__ == "__main__":
    main()
