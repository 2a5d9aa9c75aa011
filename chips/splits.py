"""Spatial split of exported chips: blocks of the zone lattice, and cross-zone conflicts."""

from __future__ import annotations

from typing import Any

from chips.cutting import Chip
from chips.lattice import assign_blocks


def drop_cross_zone(chips: list[Chip], res: float) -> list[Chip]:
    """Chips of a later UTM zone that share or touch a chip of another split in an earlier zone.

    Footprints are compared in the earliest zone's CRS (bounding boxes of densified reprojected edges,
    grown by one pixel: conservative). Same-zone chips never conflict (block lattice + guard gap).
    """
    zones = sorted({c.block[0] for c in chips})
    if len(zones) < 2:
        return []
    from pyproj import Transformer
    from shapely import STRtree, box

    ref = zones[0]
    boxes: dict[int, Any] = {}
    for c in chips:
        b = c.bounds
        if c.block[0] != ref:
            tr = Transformer.from_crs(f"EPSG:{c.block[0]}", f"EPSG:{ref}", always_xy=True)
            b = tr.transform_bounds(*b, densify_pts=21)
        boxes[c.index] = box(b[0] - res, b[1] - res, b[2] + res, b[3] + res)
    dropped: list[Chip] = []
    accepted = [c for c in chips if c.block[0] == ref]
    for zone in zones[1:]:
        tree = STRtree([boxes[c.index] for c in accepted])
        mine = [c for c in chips if c.block[0] == zone]
        for c in mine:
            hits = tree.query(boxes[c.index], predicate="intersects")
            if any(accepted[int(h)].split != c.split for h in hits):
                dropped.append(c)
        gone = {c.index for c in dropped}
        accepted += [c for c in mine if c.index not in gone]
    return dropped


def assign_splits(chips: list[Chip], params: Any, res: float) -> tuple[list[Chip], list[Chip], dict]:
    """Set ``chip.split`` by spatial block; returns (kept chips, cross-zone drops, block table)."""
    sizes: dict[tuple[int, int, int], int] = {}
    for c in chips:
        sizes[c.block] = sizes.get(c.block, 0) + 1
    blocks = assign_blocks(sizes, params.split_fractions, params.seed)
    for c in chips:
        c.split = blocks[c.block]
    dropped = drop_cross_zone(chips, res)
    gone = {c.index for c in dropped}
    table = [{"epsg": k[0], "block_row": k[1], "block_col": k[2], "split": v, "n_chips": sizes[k]}
             for k, v in sorted(blocks.items())]
    return [c for c in chips if c.index not in gone], dropped, {"blocks": table}


