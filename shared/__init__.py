"""The Verticals core: everything a vertical needs that is not specific to its industry.

The core knows no vertical by name. It resolves devices, seeds, run directories, bundles,
serving and batch prediction, and drives each vertical through
`verticals.core.contract.Vertical`. It lives in the repository's `shared/` folder and installs
as `verticals.core`, so no generic top-level `shared` package reaches site-packages.
"""

__version__ = "0.1.0"

if __name__ == "shared":  # the folder imported by its name from a checkout, not the install
    raise ImportError("the Verticals core installs as `verticals.core`: import verticals.core")
