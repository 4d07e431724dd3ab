"""lmassay: check whether an open language model has been tampered with.

The library is the product; the ``lmassay`` command is a thin layer over it.
Public entry points are imported lazily so that ``import lmassay`` stays cheap
(no torch import until a model is needed).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
