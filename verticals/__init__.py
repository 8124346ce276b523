"""Verticals: industry AI pipelines on one shared core (`verticals.core`,
the repository's `shared/` folder).

Each subpackage is one vertical; `verticals.cli` is the command line.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

__version__ = "0.1.0"


def _core_from_checkout() -> None:
    """Run from a checkout, Python may take `verticals` from this folder, which has no
    `core/`: the core is `../shared`, mapped to `verticals.core` by the install (editable or
    not). When no install maps it (a regular install run from the checkout's root), map it
    here, so the checkout's core serves its own verticals."""
    here = Path(__file__).resolve().parent
    shared = here.parent / "shared" / "__init__.py"
    if (here / "core").is_dir() or not shared.is_file() or "verticals.core" in sys.modules:
        return
    if importlib.util.find_spec("verticals.core") is not None:
        return  # an editable install's finder maps it
    spec = importlib.util.spec_from_file_location(
        "verticals.core", shared, submodule_search_locations=[str(shared.parent)]
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["verticals.core"] = module
    spec.loader.exec_module(module)


_core_from_checkout()
