"""Reading L4A granules: area selection, partial reads, production versions and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
from shapely.geometry import Polygon, box

from labels.filters import FILTER_KEYS, ShotFilters
from labels.granule import GediReadError, parse_granule_name
from labels.reader import area_mask, index_runs, read_granule_shots
from sampleworld.synthetic.granules import synthetic_beam, write_l4a_granule

NAME02 = "GEDI04_A_2023160051430_O25001_02_T01234_02_004_02_V002.h5"
NAME01 = "GEDI04_A_2023160051430_O25001_02_T01234_02_002_01_V002.h5"
AREA = box(-122.6, 40.0, -122.4, 40.2)


def _granule(path: Path, n: int = 40000, **kw) -> Path:
    rng = np.random.default_rng(3)
    beams = {b: synthetic_beam(n, (-123.0 + 0.001 * i, -122.0 + 0.001 * i), (39.0, 41.0), rng, beam_index=i)
             for i, b in enumerate(("BEAM0000", "BEAM0101", "BEAM1011"))}
    return write_l4a_granule(path, beams, **kw)


@pytest.mark.parametrize("idx, gap, runs", [
    ([], 0, []),
    ([5], 0, [(5, 6)]),
    ([1, 2, 3, 7, 8], 0, [(1, 4), (7, 9)]),
    ([1, 2, 3, 7, 8], 3, [(1, 9)]),
    ([1, 2, 3, 7, 8], 2, [(1, 4), (7, 9)]),
])
def test_index_runs(idx: list[int], gap: int, runs: list[tuple[int, int]]) -> None:
    assert index_runs(np.asarray(idx, dtype=np.int64), gap) == runs


def test_area_mask_polygon_and_nan() -> None:
    tri = Polygon([(0, 0), (2, 0), (0, 2)])
    lon = np.array([0.5, 1.5, 1.5, np.nan, 0.0])
    lat = np.array([0.5, 1.5, 0.2, 0.5, 0.0])
    np.testing.assert_array_equal(area_mask(tri, lon, lat), [True, False, True, False, True])


def test_reads_only_shots_in_area_and_matches_h5py(tmp_path: Path) -> None:
    path = _granule(tmp_path / NAME02, filler=10)  # other datasets, as in a real granule (~180 a beam)
    flt = ShotFilters(require_l4_quality=True, drop_degraded=True)
    got = read_granule_shots(str(path), AREA, flt)
    with h5py.File(path) as h5:
        expect_shots, n_input = [], 0
        for beam in ("BEAM0000", "BEAM0101", "BEAM1011"):
            g = h5[beam]
            lon, lat = g["lon_lowestmode"][()], g["lat_lowestmode"][()]
            n_input += lon.size
            m = ((lon >= -122.6) & (lon <= -122.4) & (lat >= 40.0) & (lat <= 40.2) & (g["agbd"][()] != -9999)
                 & (g["l4_quality_flag"][()] == 1) & (g["degrade_flag"][()] == 0))
            expect_shots.append(g["shot_number"][()][m])
    np.testing.assert_array_equal(got.columns["shot_number"], np.concatenate(expect_shots))
    c = got.counts
    assert c["input"] == n_input and c["kept"] == len(got.columns["agbd"]) > 0
    assert c["input"] - sum(c[k] for k in FILTER_KEYS) == c["kept"]
    assert set(got.per_beam) == {"BEAM0000", "BEAM0101", "BEAM1011"}
    assert got.production_version == "02" and got.warnings == []
    assert 0 < got.bytes_read < 0.5 * got.file_size  # only lat/lon + the selected slices were read


def test_version_01_is_read_with_a_warning(tmp_path: Path) -> None:
    got = read_granule_shots(str(_granule(tmp_path / NAME01)), AREA, ShotFilters())
    assert got.production_version == "01" and got.counts["kept"] > 0
    assert any("production version 01" in w for w in got.warnings)
    assert any("selected_algorithm 10" in w for w in got.warnings)


def test_granule_outside_area_and_beam_without_valid_shots(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    beams = {"BEAM0000": synthetic_beam(500, (10.0, 11.0), (0.0, 1.0), rng),
             "BEAM0001": synthetic_beam(500, (-122.55, -122.45), (40.05, 40.15), rng, fill_frac=1.0)}
    path = write_l4a_granule(tmp_path / NAME02, beams)
    got = read_granule_shots(str(path), AREA, ShotFilters())
    assert got.counts["kept"] == 0 and got.columns == {}
    assert got.per_beam["BEAM0000"]["outside_area"] == 500
    assert got.per_beam["BEAM0001"]["fill"] == 500


def test_missing_dataset_error_names_file_beam_and_dataset(tmp_path: Path) -> None:
    path = _granule(tmp_path / NAME02, n=100, omit=("degrade_flag",))
    with pytest.raises(GediReadError, match=rf"{NAME02}: BEAM0000 lacks dataset\(s\) degrade_flag"):
        read_granule_shots(str(path), AREA, ShotFilters())
    # without the filter that needs it the dataset is optional: stored as 255 with a warning
    got = read_granule_shots(str(path), AREA, ShotFilters(drop_degraded=False))
    assert any("degrade_flag" in w for w in got.warnings)


def test_file_name_must_be_l4a(tmp_path: Path) -> None:
    with pytest.raises(GediReadError, match="is a GEDI L2B granule"):
        read_granule_shots(str(tmp_path / "GEDI02_B_2023160051430_O25001_02_T01234_02_003_01_V002.h5"),
                           AREA, ShotFilters())
    with pytest.raises(GediReadError, match="granule file not found"):
        read_granule_shots(str(tmp_path / NAME02), AREA, ShotFilters())


def test_renamed_file_falls_back_to_metadata_name(tmp_path: Path) -> None:
    path = _granule(tmp_path / "granule.h5", n=100, metadata_name=NAME01)
    got = read_granule_shots(str(path), AREA, ShotFilters())
    assert got.granule_id == NAME01[:-3] and got.production_version == "01"


def test_parse_granule_name() -> None:
    g = parse_granule_name(f"https://data.ornldaac.earthdata.nasa.gov/protected/gedi/x/{NAME01}")
    assert (g.orbit, g.sub_orbit, g.track, g.pge, g.production_version) == (25001, 2, 1234, "002", "01")
    assert g.start.isoformat() == "2023-06-09T05:14:30+00:00"


# ------------------------------------------------------------------ real granules (../shared/realdata)
def _real(realdata: Path, sub: str, prefix: str) -> Path:
    found = sorted((realdata / sub).glob(f"{prefix}*.h5"))
    if not found:
        pytest.skip(f"no {prefix}* in {realdata / sub}")
    return found[0]


def test_real_l2a_granule_is_refused(realdata: Path, tmp_path: Path) -> None:
    l2a = _real(realdata, "gedi_other", "GEDI02_A")
    with pytest.raises(GediReadError, match=rf"{l2a.name}: is a GEDI L2A granule"):
        read_granule_shots(str(l2a), box(-180, -90, 180, 90), ShotFilters())
    # the same file renamed as L4A is caught by its content (no agbd, has rh)
    fake = tmp_path / NAME02
    shutil.copy(l2a, fake)
    with pytest.raises(GediReadError, match=rf"{NAME02}: BEAM0000 has no 'agbd' dataset.*looks like GEDI L2A"):
        read_granule_shots(str(fake), box(-180, -90, 180, 90), ShotFilters())


def test_real_truncated_granule(realdata: Path, tmp_path: Path) -> None:
    src = _real(realdata, "gedi_l4a", "GEDI04_A_2020036")
    bad = tmp_path / src.name
    bad.write_bytes(src.read_bytes()[: src.stat().st_size // 2])
    with pytest.raises(GediReadError, match=rf"{src.name}: cannot open as HDF5 \(truncated or corrupt"):
        read_granule_shots(str(bad), box(-180, -90, 180, 90), ShotFilters())


def test_real_granule_with_corrupt_chunk(realdata: Path, tmp_path: Path) -> None:
    src = _real(realdata, "gedi_l4a", "GEDI04_A_2020036")
    bad = tmp_path / src.name
    shutil.copy(src, bad)
    bad.chmod(0o644)
    with h5py.File(bad) as h5:
        info = h5["BEAM0101/agbd"].id.get_chunk_info(0)
    with open(bad, "r+b") as fh:  # overwrite the compressed agbd chunk of BEAM0101 with garbage
        fh.seek(info.byte_offset)
        fh.write(b"\xff\x00" * (info.size // 2))
    with pytest.raises(GediReadError, match=rf"{src.name}: BEAM0101: reading failed"):
        read_granule_shots(str(bad), box(-180, -90, 180, 90), ShotFilters())
