"""What bearer tokens cost a server: finance `/predict` of one record, served with tokens
(every request's token hashed and compared with the server's, `shared/auth.py`) and open,
alternated in one run, best of `--repeats`. One worker, one client: the latency a caller
sees.

    .venv/bin/python benchmarks/auth.py [--seconds 5] [--repeats 3] [--out f.json]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import parser, say, write_figures  # noqa: E402
from benchmarks.loopback import serving  # noqa: E402
from benchmarks.serving import bundle_for, load, one_request, warm  # noqa: E402
from verticals.core.auth import ENV, new_token  # noqa: E402


def main() -> None:
    args = parser(__doc__)
    args.add_argument("--seconds", type=float, default=5.0)
    args.add_argument("--repeats", type=int, default=3)
    opts = args.parse_args()
    token = new_token()
    bearer = {"Authorization": f"Bearer {token}"}
    settings = {"open": ({}, {}), "tokens": ({ENV: f"predict:{token}"}, bearer)}
    with tempfile.TemporaryDirectory(prefix="bench-auth-") as tmp_name:
        tmp = Path(tmp_name)
        bundle = bundle_for("finance", tmp, opts.device)
        body = one_request(bundle)
        best: dict[str, dict[str, Any]] = {}
        for _ in range(opts.repeats):
            for name, (env, headers) in settings.items():
                with serving(bundle, 1, env=env) as url:
                    warm(f"{url}/predict", body, headers=headers)
                    figures = load(f"{url}/predict", body, 1, opts.seconds, tmp, headers)
                say(f"  {name:6}: p50 {figures['p50_ms']:.3f} ms, p99 {figures['p99_ms']:.3f} "
                    f"ms, {figures['requests_per_s']:.0f} req/s")  # fmt: skip
                if figures["p50_ms"] < best.get(name, {}).get("p50_ms", float("inf")):
                    best[name] = figures
        ratio = best["tokens"]["p50_ms"] / best["open"]["p50_ms"]
        say(f"p50 with tokens {best['tokens']['p50_ms']:.3f} ms against "
            f"{best['open']['p50_ms']:.3f} ms open: {ratio:.2f}x")  # fmt: skip
        write_figures(opts.out, {"best": best, "p50_ratio": ratio, "seconds": opts.seconds})


if __name__ == "__main__":
    main()
