"""HLS search and cloud-free mean composites per MGRS tile (no Prefect here).

Entry points: :func:`compositing.search.search_hls` and :func:`compositing.composite.build_composites`
(per tile: :func:`compositing.composite.composite_tile`).
"""
