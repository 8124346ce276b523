"""`verticals demo`: every installed vertical end to end on its built-in demo data.

For each vertical: train with `experiment=demo`, re-evaluate, package, and score a few
records through the bundle; then one summary table.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from verticals.configs import compose
from verticals.core import pipeline, registry
from verticals.core.batch import predict_file, predict_folder
from verticals.core.bundle import load_bundle, write_bundle
from verticals.core.contract import FileVertical
from verticals.core.logs import get_logger

log = get_logger("demo")


def run_vertical(name: str, overrides: Sequence[str], rows: int) -> dict[str, object]:
    cfg = compose("train", name, ["experiment=demo", *overrides])
    result = pipeline.train(cfg)
    evaluated = pipeline.evaluate(cfg, result.run_dir)
    bundle_dir = write_bundle(result.run_dir, Path(cfg.paths.bundles_dir), result.vertical)
    bundle = load_bundle(bundle_dir)
    if isinstance(result.vertical, FileVertical):
        folder = result.run_dir / "demo_inputs"
        files = result.vertical.example_files(result.splits, min(rows, 4), folder)
        out = result.run_dir / "demo_predictions"
        predict_folder(bundle, folder, out, progress=False)
        scored = f"{len(files)} files -> {out.name}/"
    else:
        inputs = result.vertical.example_inputs(result.splits, rows)
        sample = result.run_dir / "demo_inputs.parquet"
        inputs.to_parquet(sample, index=False)
        out = result.run_dir / "demo_predictions.parquet"
        predict_file(bundle, sample, out, progress=False)
        scored = f"{len(inputs)} rows -> {out.name}"
    metric = result.vertical.headline_metric
    return {
        "vertical": name,
        "metric": f"{metric}={evaluated.get(metric, float('nan')):.4f}",
        "metrics": pipeline.format_metrics(evaluated, limit=4),
        "run": str(result.run_dir),
        "bundle": str(bundle_dir),
        "predictions": scored,
    }


def format_table(rows: list[dict[str, object]]) -> str:
    keys = ["vertical", "metric", "run", "bundle", "predictions"]
    widths = {k: max(len(k), *(len(str(r[k])) for r in rows)) for k in keys}
    line = " | ".join(k.ljust(widths[k]) for k in keys)
    sep = "-+-".join("-" * widths[k] for k in keys)
    body = [" | ".join(str(r[k]).ljust(widths[k]) for k in keys) for r in rows]
    return "\n".join([line, sep, *body])


def main(overrides: Sequence[str] = (), rows: int = 200) -> list[dict[str, object]]:
    names = registry.available()
    results = []
    for name in names:
        log.info("demo: %s", name)
        results.append(run_vertical(name, overrides, rows))
    print(
        "\nVerticals demo: each vertical trained, evaluated, packaged, and scored from its bundle\n"
    )
    print(format_table(results))
    for r in results:
        print(f"\n{r['vertical']}: {r['metrics']}")
    return results
