"""Quicklook PNGs: written, not blank, with a colour bar (a vertical colour gradient right of the image),
and the colour scale and units they report."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from matplotlib.image import imread

from core import quicklooks as ql

ND = -9999.0
TR = Affine(30, 0, 600000, 0, -30, 4440000)


def _raster(path: Path, data: np.ndarray, names: list[str]) -> str:
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype="float32", crs="EPSG:32610", transform=TR, nodata=ND) as ds:
        ds.write(data.astype(np.float32))
        for i, n in enumerate(names, start=1):
            ds.set_band_description(i, n)
        ds.update_tags(MGRS_TILE="10TFK")
    return str(path)


@pytest.fixture(scope="module")
def rasters(tmp_path_factory):
    root = tmp_path_factory.mktemp("ql")
    yy, xx = np.mgrid[0:120, 0:150].astype(np.float32)
    green = 0.5 + 0.5 * np.sin(xx / 17) * np.cos(yy / 23)
    comp = np.stack([400 + 300 * green, 700 + 200 * green, 600 - 300 * green, 2500 + 1500 * green,
                     1800 - 500 * green, 1000 - 400 * green])
    comp[:, :10, :10] = ND
    agb = 250 * green**2
    labels = np.full((2, 120, 150), ND, np.float32)
    labels[0, :, 5::9] = agb[:, 5::9]
    labels[1] = np.where(labels[0] != ND, 1 + (yy % 2), 0)
    mp = np.stack([agb, np.maximum(agb - 20 - 0.2 * agb, 0), agb + 30 + 0.4 * agb])
    mp[:, 100:, 140:] = ND
    diff = (60 * np.sin(xx / 30))[None]
    return {"composite": _raster(root / "composite.tif", comp, ["B02", "B03", "B04", "B05", "B06", "B07"]),
            "labels": _raster(root / "labels.tif", labels, ["agbd", "shot_count"]),
            "map": _raster(root / "map.tif", mp, ["agb", "agb_lower", "agb_upper"]),
            "diff": _raster(root / "diff.tif", diff, ["agb_change"]), "root": root}


def _check_png(q: ql.Quicklook) -> None:
    img = imread(q.path)[..., :3]
    assert (img.shape[1], img.shape[0]) == (q.width_px, q.height_px) and q.width_px > 300 and q.height_px > 300
    w = img.shape[1]
    left, right = img[:, : int(0.7 * w)], img[:, int(0.78 * w):]
    colours = np.unique((left.reshape(-1, 3) * 255).astype(np.uint8), axis=0)
    assert len(colours) > 30 and left.std() > 0.05, f"{q.path}: the image looks blank"
    # a colour bar: some column right of the image holds a long vertical run of many distinct colours
    best = max(len(np.unique((right[:, c] * 255).astype(np.uint8), axis=0)) for c in range(right.shape[1]))
    assert best >= 40, f"{q.path}: no colour bar found ({best} colours in the best column)"


@pytest.mark.parametrize("kind", ["true_colour", "map", "labels", "label_density", "interval_width", "change"])
def test_quicklook_is_written_with_a_colour_bar_and_units(rasters, kind):
    png = str(rasters["root"] / f"{kind}.png")
    q = {"true_colour": lambda: ql.true_colour(rasters["composite"], png),
         "map": lambda: ql.band(rasters["map"], png, title="AGB"),
         "labels": lambda: ql.band(rasters["labels"], png, title="labels", kind="labels"),
         "label_density": lambda: ql.label_density(rasters["labels"], png, cell_m=300),
         "interval_width": lambda: ql.interval_width(rasters["map"], png),
         "change": lambda: ql.change(rasters["diff"], png)}[kind]()
    assert q.kind == kind and q.path == png and Path(png).is_file()
    _check_png(q)
    expected_units = {"true_colour": "surface reflectance", "label_density": "GEDI shots per km²",
                      "interval_width": "interval width (Mg/ha)", "change": "AGB change (Mg/ha)"}.get(kind, "Mg/ha")
    assert q.units.startswith(expected_units)
    assert q.vmax > q.vmin


def test_colour_scales(rasters, tmp_path):
    change = ql.change(rasters["diff"], str(tmp_path / "c.png"))
    assert change.vmin == pytest.approx(-change.vmax) and 50 < change.vmax <= 60
    tc = ql.true_colour(rasters["composite"], str(tmp_path / "t.png"))
    assert 0 < tc.vmin < tc.vmax < 1 and tc.valid_fraction == pytest.approx(1 - 100 / (120 * 150))
    dens = ql.label_density(rasters["labels"], str(tmp_path / "d.png"), cell_m=300)
    # 10 x 10 px cells of 0.09 km2; tracks every 9th column from 5: the cell of columns 50-59 holds two
    # (50 and 59), 10 rows each, 1.5 shots per pixel on average: 30 shots
    assert dens.vmax == pytest.approx(30 / 0.09)
    width = ql.interval_width(rasters["map"], str(tmp_path / "w.png"))
    assert width.vmin == 0 and 50 < width.vmax <= 200


def test_interval_width_needs_the_interval_bands(rasters, tmp_path):
    with pytest.raises(ValueError, match="agb_lower"):
        ql.interval_width(rasters["diff"], str(tmp_path / "x.png"))
