"""HLS L30 search and cloud-free mean composites per MGRS tile (no Prefect here).

Entry points: :func:`compositing.search.search_hls`, :func:`compositing.composite.build_composites`
(per tile: :func:`compositing.composite.composite_tile`) and :func:`run_hls_composite` (both).
"""

from __future__ import annotations

from typing import Any

__all__ = ["run_hls_composite"]


def run_hls_composite(**params: Any) -> dict[str, Any]:
    """Search + composites in one call; see :func:`compositing.pipeline.run_hls_composite`."""
    from .pipeline import run_hls_composite as _run

    return _run(**params)
