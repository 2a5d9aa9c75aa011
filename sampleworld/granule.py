"""One HLS granule on disk: the 15 COGs with HLS's tag set, the browse JPEG, the CMR XML, the STAC item."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from pyproj import Transformer

from core.grid import Grid
from sampleworld import hls as H
from sampleworld.cog import hls_utm_wkt, write_cog
from sampleworld.spec import WorldSpec
from sampleworld.stac import hls_item

FMASK_BIT_DESCRIPTION = (
    "Bits are listed from the MSB (bit 7) to the LSB (bit 0): \n7-6    aerosol:\n       00 - climatology\n"
    "       01 - low\n       10 - average\n       11 - high\n5      water\n4      snow/ice\n3      cloud shadow\n"
    "2      adjacent to cloud\n1      cloud\n0      cirrus cloud\n"
)
_SCALE = {"B10": 0.01, "B11": 0.01, "SAA": 0.01, "SZA": 0.01, "VAA": 0.01, "VZA": 0.01}


def _stamp(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def granule_tags(acq: H.Acquisition, tile: str, win: Grid, zone: int, cloud_pct: int,
                 spatial_pct: int) -> dict[str, str]:
    """The dataset-level tags every real HLS L30 v2.0 COG carries, with this granule's values."""
    sc = acq.spec
    path_row = "045032" if sc.swath_cut < 0 else "044032"
    acq_date = acq.start.strftime("%Y%m%d")
    l1 = acq.start + timedelta(days=1, hours=3, minutes=7)
    sensing = acq.start.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0Z"
    return {
        "ACCODE": "Lasrc",
        "arop_ave_xshift(meters)": "0", "arop_ave_yshift(meters)": "0", "arop_ncp": "0",
        "arop_rmse(meters)": "0", "arop_s2_refimg": "NONE",
        "cloud_coverage": str(cloud_pct),
        "HLS_PROCESSING_TIME": _stamp(acq.start + timedelta(days=2, hours=5, minutes=3)),
        "HORIZONTAL_CS_NAME": f"UTM, WGS84, UTM ZONE {zone}",
        "L1_PROCESSING_TIME": _stamp(l1),
        "LANDSAT_PRODUCT_ID": f"{sc.sensor}_L1TP_{path_row}_{acq_date}_{l1 + timedelta(days=6):%Y%m%d}_02_T1",
        "LANDSAT_SCENE_ID": f"{sc.sensor[0]}C{sc.sensor[3]}{path_row}{acq.start:%Y%j}LGN00",
        "MEAN_SUN_AZIMUTH_ANGLE": repr(round(acq.sun_azimuth, 13)),
        "MEAN_SUN_ZENITH_ANGLE": repr(round(acq.sun_zenith, 13)),
        "MEAN_VIEW_AZIMUTH_ANGLE": repr(round(acq.view_azimuth, 13)),
        "MEAN_VIEW_ZENITH_ANGLE": repr(round(acq.view_zenith, 13)),
        "NBAR_SOLAR_ZENITH": repr(round(acq.sun_zenith - 1.7, 13)),
        "NCOLS": str(win.width), "NROWS": str(win.height),
        "OVR_RESAMPLING_ALG": "NEAREST",
        "PROCESSING_LEVEL": "L1TP",
        "SENSING_TIME": sensing,
        "SENSOR": "OLI_TIRS",
        "SENTINEL2_TILEID": tile,
        "spatial_coverage": str(spatial_pct),
        "SPATIAL_RESOLUTION": "30",
        "TIRS_SSM_MODEL": "FINAL", "TIRS_SSM_POSITION_STATUS": "ESTIMATED",
        "ULX": f"{win.transform[2]:.0f}", "ULY": f"{win.transform[5]:.0f}",
        "USGS_SOFTWARE": "LPGS_16.3.0",
    }


def write_granule(out: Path, spec: WorldSpec, world: Grid, win: Grid, tile: str, acq: H.Acquisition,
                  scene: H.RenderedScene, rng: np.random.Generator) -> dict[str, Any] | None:
    """Write one tile's granule of a rendered scene; None when the tile window is outside the swath."""
    r0, c0 = win.offset_in(world)
    sl = (slice(r0, r0 + win.height), slice(c0, c0 + win.width))
    valid = scene.valid[sl]
    if not valid.any():
        return None
    item_id = acq.item_id(tile)
    gdir = out / "hls" / item_id
    fm = scene.fmask[sl]
    n_valid = int(valid.sum())
    cloudy = ((fm & 0b1010) > 0) & valid
    cloud_pct = int(round(100.0 * cloudy.sum() / n_valid))
    spatial_pct = int(round(100.0 * n_valid / valid.size))
    zone = win.epsg - 32600  # the tile's own UTM zone (a region world spans two)
    wkt = hls_utm_wkt(zone)
    base = granule_tags(acq, tile, win, zone, cloud_pct, spatial_pct)
    files: dict[str, str] = {}
    for key, arr in scene.bands.items():
        scale = _SCALE.get(key, 0.0001)
        tags = {**base, "add_offset": "0.0", "scale_factor": repr(scale), "long_name": H.LONG_NAMES[key],
                "_FillValue": str(H.REFL_NODATA)}
        files[key] = str(write_cog(gdir / f"{item_id}.{key}.tif", arr[sl], win, nodata=H.REFL_NODATA,
                                   tags=tags, crs_wkt=wkt, description=H.LONG_NAMES[key], scale=scale,
                                   offset=0.0))
    ftags = {**base, "Fmask bit description": FMASK_BIT_DESCRIPTION, "_FillValue": str(H.FMASK_FILL)}
    files["Fmask"] = str(write_cog(gdir / f"{item_id}.Fmask.tif", fm, win, nodata=H.FMASK_FILL, tags=ftags,
                                   crs_wkt=wkt))
    for key, arr in scene.angles.items():
        tags = {**base, "add_offset": "0.0", "scale_factor": "0.01", "long_name": H.LONG_NAMES[key],
                "_FillValue": str(H.ANGLE_FILL)}
        files[key] = str(write_cog(gdir / f"{item_id}.{key}.tif", arr[sl], win, nodata=H.ANGLE_FILL,
                                   tags=tags, crs_wkt=wkt, description=H.LONG_NAMES[key], scale=0.01,
                                   offset=0.0))
    ring = footprint(valid, win, win.epsg)
    concept = f"G{2_800_000_000 + int(rng.integers(0, 99_999_999))}-SAMPLEWORLD"
    files["browse"] = str(_browse(gdir / f"{item_id}.jpg", scene, sl))
    files["metadata"] = str(_cmr_xml(gdir / f"{item_id}.cmr.xml", item_id, acq, ring, tile, cloud_pct,
                                     spatial_pct))
    return hls_item(item_id, ring, acq.start, acq.end, cloud_pct, files, concept, rng)


def footprint(valid: np.ndarray, win: Grid, epsg: int) -> list[tuple[float, float]]:
    """Closed lon/lat ring (SE, NE, NW, SW, SE as CMR lists it) of the valid (in-swath) pixels; the swath
    edge is straight, so the first and last valid columns of the top and bottom rows span it."""
    top = np.flatnonzero(valid.any(axis=1))
    r_top, r_bot = int(top[0]), int(top[-1])
    ct = np.flatnonzero(valid[r_top])
    cb = np.flatnonzero(valid[r_bot])
    a = win.affine
    pts_px = [(cb[-1] + 1, r_bot + 1), (ct[-1] + 1, r_top), (ct[0], r_top), (cb[0], r_bot + 1)]
    xy = [(a.c + a.a * float(c), a.f + a.e * float(r)) for c, r in pts_px]
    tr = Transformer.from_crs(epsg, 4326, always_xy=True)
    ring = [tuple(tr.transform(x, y)) for x, y in xy]
    return ring + [ring[0]]


def _browse(path: Path, scene: H.RenderedScene, sl: tuple[slice, slice]) -> Path:
    rgb = np.stack([scene.bands[k][sl] for k in ("B04", "B03", "B02")], axis=-1).astype(np.float32)
    step = max(1, int(np.ceil(max(rgb.shape[:2]) / 1000)))
    rgb = np.clip(rgb[::step, ::step] / 2500.0 * 255.0, 0, 255).astype(np.uint8)
    tmp = path.with_name(path.name + ".tmp")
    Image.fromarray(rgb).save(tmp, format="JPEG", quality=80)
    tmp.replace(path)
    return path


def _cmr_xml(path: Path, item_id: str, acq: H.Acquisition, ring: list[tuple[float, float]], tile: str,
             cloud_pct: int, spatial_pct: int) -> Path:
    """A CMR ECHO10 granule record with the real record's main elements (see realdata ``.cmr.xml``)."""
    pts = "".join(f"\n            <Point>\n              <PointLongitude>{x:.8f}</PointLongitude>\n"
                  f"              <PointLatitude>{y:.8f}</PointLatitude>\n            </Point>" for x, y in ring[:-1])
    attrs = {"CLOUD_COVERAGE": cloud_pct, "MGRS_TILE_ID": tile, "SPATIAL_COVERAGE": spatial_pct,
             "SPATIAL_RESOLUTION": "30.0"}
    add = "".join(f"\n    <AdditionalAttribute>\n      <Name>{k}</Name>\n      <Values>\n        <Value>{v}</Value>"
                  "\n      </Values>\n    </AdditionalAttribute>" for k, v in attrs.items())
    xml = (f"<Granule>\n  <GranuleUR>{item_id}</GranuleUR>\n  <Collection>\n    <DataSetId>HLS Landsat "
           "Operational Land Imager Surface Reflectance and TOA Brightness Daily Global 30m v2.0</DataSetId>\n"
           f"  </Collection>\n  <Temporal>\n    <RangeDateTime>\n      <BeginningDateTime>"
           f"{acq.start:%Y-%m-%dT%H:%M:%S.%fZ}</BeginningDateTime>\n      <EndingDateTime>"
           f"{acq.end:%Y-%m-%dT%H:%M:%S.%fZ}</EndingDateTime>\n    </RangeDateTime>\n  </Temporal>\n"
           "  <Spatial>\n    <HorizontalSpatialDomain>\n      <Geometry>\n        <GPolygon>\n          <Boundary>"
           f"{pts}\n          </Boundary>\n        </GPolygon>\n      </Geometry>\n    </HorizontalSpatialDomain>\n"
           f"  </Spatial>\n  <AdditionalAttributes>{add}\n  </AdditionalAttributes>\n</Granule>\n")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(xml)
    tmp.replace(path)
    return path
