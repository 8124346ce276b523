"""Verticals: industry AI pipelines on one shared core (`verticals.core`,
the repository's `shared/` folder).

Each subpackage is one vertical; `verticals.cli` is the command line.
"""

__version__ = "0.1.0"
