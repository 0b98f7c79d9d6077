"""naturelm-edge: NatureLM-audio on field recorders.

``from naturelm_edge import EdgeModel`` is the Python API (see :mod:`naturelm_edge.api`); it is loaded on
first use so that ``import naturelm_edge`` stays cheap for the commands that need only the version.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from naturelm_edge._version import __version__

__all__ = ["EdgeModel", "WindowResult", "__version__"]

if TYPE_CHECKING:
    from naturelm_edge.api import EdgeModel, WindowResult


def __getattr__(name: str) -> Any:
    if name in ("EdgeModel", "WindowResult"):
        from naturelm_edge import api

        return getattr(api, name)
    raise AttributeError(f"module 'naturelm_edge' has no attribute {name!r}")
