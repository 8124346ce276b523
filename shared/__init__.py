"""The Verticals core: everything a vertical needs that is not specific to its industry.

The core knows no vertical by name. It resolves devices, seeds, run directories, bundles,
serving and batch prediction, and drives each vertical through `shared.contract.Vertical`.
"""

__version__ = "0.1.0"
