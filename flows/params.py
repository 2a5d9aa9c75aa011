"""Flow parameters as pydantic models: defaults, descriptions and validation the Prefect UI renders as forms.

Stage flows take flat models whose field names are the ones the issues give; ``biomass-pipeline`` takes one
model nested per stage. ``aoi`` accepts a lon/lat bbox, a GeoJSON geometry/Feature/FeatureCollection or a
path to a GeoJSON file.
"""

from __future__ import annotations

import os
from datetime import UTC, date, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from chips.params import ChipParams
from compositing.contracts import CompositeOptions, SearchOptions
from core.bands import parse_collections
from labels.contracts import LabelOptions
from training.change import ChangeOptions
from training.config import TrainConfig
from training.totals import TotalsOptions
from training.uncertainty import IntervalOptions

# Defaults live in the engines' option dataclasses; the fields below take them from there (one definition).
_SEARCH = SearchOptions()
_COMP = CompositeOptions()
_LABELS = LabelOptions()
_CHIPS = ChipParams()
_TRAIN = TrainConfig()
_CHANGE = ChangeOptions()
_INTERVALS = IntervalOptions()
_TOTALS = TotalsOptions()

AoiType = list[float] | dict[str, Any] | str
DASK_ADDRESS_ENV = "AGB_DASK_ADDRESS"


def env_dask_address() -> str | None:
    """Default Dask scheduler: ``$AGB_DASK_ADDRESS`` of the process running the flow (a worker's env)."""
    return os.environ.get(DASK_ADDRESS_ENV) or None


def last_finished_season_year(aoi: Any, today: date | None = None) -> int:
    """Year of the area's most recent default season that has ended by ``today`` (UTC; tropics: the last
    whole calendar year, whose scenes choose the window)."""
    from core.timeline import last_finished_year

    return last_finished_year(aoi, today or datetime.now(UTC).date())


def _geom_or_none(aoi: Any) -> Any:
    """The AOI geometry, or None for a GeoJSON file that is not readable here (checked where it runs)."""
    from core.area import AoiError, parse_aoi

    try:
        return parse_aoi(aoi)
    except AoiError:
        if isinstance(aoi, str) and not aoi.strip().startswith("{"):
            return None
        raise


def _check_window(aoi: Any, year: int | None, season: SeasonParam | None, hls_collection: str | None,
                  gedi: bool) -> None:
    """Timeline checks of a stage's window (core.timeline): HLS has scenes, GEDI has shots (``gedi``)."""
    from core.area import Season
    from core.timeline import check_gedi_season, check_hls_season, season_for_year

    geom = _geom_or_none(aoi)
    if geom is None or (year is None and season is None):
        return
    window = Season.from_any(season.model_dump()) if season else season_for_year(geom, int(year))  # type: ignore[arg-type]
    if hls_collection:
        check_hls_season(window, hls_collection)
    if gedi:
        check_gedi_season(geom, window, year)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class SeasonParam(_Model):
    start: str = Field(description="First day, YYYY-MM-DD (inclusive).", pattern=r"^\d{4}-\d{2}-\d{2}$")
    end: str = Field(description="Last day, YYYY-MM-DD (inclusive).", pattern=r"^\d{4}-\d{2}-\d{2}$")

    @model_validator(mode="after")
    def _ordered(self) -> SeasonParam:
        if self.end < self.start:
            raise ValueError(f"season end {self.end} is before start {self.start}")
        return self


def _check_aoi(v: Any) -> Any:
    from core.area import parse_aoi

    if isinstance(v, dict | list | tuple) or (isinstance(v, str) and v.strip().startswith("{")):
        parse_aoi(v)  # raises a clear AoiError (a ValueError) for a bad bbox/geometry
    return list(v) if isinstance(v, tuple) else v


YEAR_DOC = ("Year; the default season is the leaf-on window of the area's hemisphere (north Jun 1-Sep 30; "
            "south Dec 1 of year-1 - Mar 31), in the tropics the 4-month window of the year with the lowest "
            "mean scene cloud cover. HLS L30 starts 2013-04-11; GEDI L4A has shots 2019-04-18..2023-03-16 and "
            "2024-04-26..2024-11-27 between 51.6 S and 51.6 N.")


class _AreaYear(_Model):
    aoi: AoiType = Field(description="Area: lon/lat bbox [minx, miny, maxx, maxy], a GeoJSON geometry, or a path "
                         "to a GeoJSON file.")
    year: int | None = Field(None, ge=1984, le=2100, description=YEAR_DOC)
    season: SeasonParam | None = Field(None, description="Explicit date window overriding the default season.")

    _aoi_ok = field_validator("aoi")(classmethod(lambda cls, v: _check_aoi(v)))

    @model_validator(mode="after")
    def _year_or_season(self) -> _AreaYear:
        if self.year is None and self.season is None:
            raise ValueError("give `year` or `season`")
        return self


class HlsOptions(_Model):
    stac_url: str = Field(_SEARCH.stac_url, description="STAC API root (NASA CMR-STAC LPCLOUD by default).")
    collection: str = Field(_SEARCH.collection, description="HLS v2.0 collection: HLSL30_2.0 (Landsat), "
                            "HLSS30_2.0 (Sentinel-2; B8A/B11/B12 as NIR/SWIR), or 'HLSL30_2.0,HLSS30_2.0' for one "
                            "composite of both (about twice the clear observations). Other ids are refused.")
    max_cloud_cover: float | None = Field(_SEARCH.max_cloud_cover, ge=0, le=100,
                                          description="Keep scenes with eo:cloud_cover <= this (%).")
    mask_snow: bool = Field(_COMP.mask_snow, description="Also mask Fmask bit 4 (snow/ice).")
    mask_water: bool = Field(_COMP.mask_water, description="Also mask Fmask bit 5 (water).")
    mask_high_aerosol: bool = Field(_COMP.mask_high_aerosol, description="Also mask high aerosol (Fmask bits 6-7 == 3).")
    min_observations: int = Field(_COMP.min_observations, ge=1,
                                  description="Pixels with fewer valid observations become nodata (-9999).")
    on_read_error: Literal["skip", "fail"] = Field(_COMP.on_read_error, description="Unreadable scene (or one "
                                                   "on another CRS/grid): skip and record, or fail.")
    granite_layout: bool = Field(_COMP.granite_layout, description="Also write composites_granite/<TILE>/"
                                 "<SEASON>.tif in granite-geospatial-biomass's 10-band layout (B01,B02..B07,B09,"
                                 "B10,B11; uncomposited bands nodata): a folder per tile for its inference_on_dir.")

    _collection_ok = field_validator("collection")(classmethod(lambda cls, v: ",".join(parse_collections(v))))
    engine: Literal["kernel", "stackstac"] = Field(_COMP.engine, description="Composite engine: kernel (default, "
                                                   "fastest) or stackstac (the same composite computed with stackstac).")

    def search_options(self) -> SearchOptions:
        return SearchOptions(stac_url=self.stac_url, collection=self.collection, max_cloud_cover=self.max_cloud_cover)

    def composite_options(self) -> CompositeOptions:
        return CompositeOptions(mask_snow=self.mask_snow, mask_water=self.mask_water,
                                mask_high_aerosol=self.mask_high_aerosol, min_observations=self.min_observations,
                                on_read_error=self.on_read_error, collection=self.collection,
                                granite_layout=self.granite_layout, engine=self.engine)


class HlsCompositeParams(_AreaYear, HlsOptions):
    output_dir: str = Field(description="Folder for search results and composites/<TILE>/<SEASON>.tif.")
    dask_address: str | None = Field(None, validate_default=True, description="Dask scheduler address "
                                     "(tcp://host:8786); unset: $AGB_DASK_ADDRESS, else local.")
    force: bool = Field(False, description="Re-run even when a result for the same inputs exists.")

    _dask_env = field_validator("dask_address", mode="before")(classmethod(lambda cls, v: v or env_dask_address()))

    @model_validator(mode="after")
    def _timeline(self) -> HlsCompositeParams:
        _check_window(self.aoi, self.year, self.season, self.collection, gedi=False)
        return self


class GediOptions(_Model):
    stac_url: str = Field(_LABELS.stac_url, description="STAC API root for GEDI L4A (CMR-STAC ORNL_CLOUD by default).")
    collection: str = Field(_LABELS.collection, description="GEDI L4A v2.1 collection id.")
    granules: list[str] | None = Field(None, description="Local paths or URLs of L4A granules (skips the search).")
    require_l4_quality: bool = Field(_LABELS.require_l4_quality, description="Keep only l4_quality_flag == 1.")
    drop_degraded: bool = Field(_LABELS.drop_degraded, description="Keep only degrade_flag == 0.")
    min_sensitivity: float | None = Field(_LABELS.min_sensitivity, ge=0, le=1,
                                          description="Minimum beam sensitivity (e.g. 0.9).")
    leaf_on_only: bool = Field(_LABELS.leaf_on_only, description="Keep only leaf_off_flag == 0.")
    pft_classes: list[int] | None = Field(_LABELS.pft_classes, description="Keep only these plant functional types "
                                          "(default all).")
    nodata: float = Field(_LABELS.nodata, description="Label nodata: -9999 (default) or -1 (granite/TerraTorch style).")
    on_read_error: Literal["skip", "fail"] = Field(_LABELS.on_read_error,
                                                   description="Unreadable granule: skip and record, or fail.")

    def label_options(self) -> LabelOptions:
        return LabelOptions(stac_url=self.stac_url, collection=self.collection,
                            require_l4_quality=self.require_l4_quality, drop_degraded=self.drop_degraded,
                            min_sensitivity=self.min_sensitivity, leaf_on_only=self.leaf_on_only,
                            pft_classes=tuple(self.pft_classes) if self.pft_classes is not None else None,
                            nodata=self.nodata, on_read_error=self.on_read_error)


class GediLabelsParams(_AreaYear, GediOptions):
    composites: list[str] | str | None = Field(None, description="Composite COGs whose grids to use, or the "
                                               "output_dir of hls-composite. Without it only GeoParquet is written.")
    output_dir: str = Field(description="Folder for labels/gedi_shots.parquet and labels/<TILE>/<SEASON>.tif.")
    force: bool = False

    @model_validator(mode="after")
    def _timeline(self) -> GediLabelsParams:
        if not self.granules:  # given granules are read whatever their dates
            _check_window(self.aoi, self.year, self.season, None, gedi=True)
        return self


class ChipOptions(_Model):
    chip_size: int = Field(_CHIPS.chip_size, ge=16, le=2048, description="Chip size in pixels.")
    stride: int | None = Field(_CHIPS.stride, ge=1, description="Stride in pixels (default chip_size: no overlap).")
    min_labeled_pixels: int = Field(_CHIPS.min_labeled_pixels, ge=0,
                                    description="Keep chips with at least this many labelled pixels.")
    max_nodata_fraction: float = Field(_CHIPS.max_nodata_fraction, ge=0, le=1,
                                       description="Keep chips with at most this image nodata.")
    split_fractions: list[float] = Field(list(_CHIPS.split_fractions),
                                         description="train/val/test shares of the labelled pixels (by spatial block).")
    split_block_m: float = Field(_CHIPS.split_block_m, gt=0, description="Edge of the square spatial blocks "
                                 "assigned to splits, metres (independent of the chip size).")
    split_buffer_m: float = Field(_CHIPS.split_buffer_m, ge=0, description="Labelled pixels of different splits "
                                  "are at least this far apart (metres); labels inside the buffer are masked.")
    seed: int = Field(_CHIPS.seed, description="Seed of the spatial-block split.")
    band_layout: Literal["model", "granite"] = Field(
        _CHIPS.band_layout, description="Image chip bands: 'model' = B02..B07; 'granite' = granite-geospatial-"
        "biomass's 10-band layout B01,B02..B07,B09,B10,B11 (uncomposited bands nodata), so granite's own config "
        "runs on the export unchanged but for its data roots.")
    esri_splits: bool = Field(_CHIPS.esri_splits, description="Also write esri_splits/{train,val,test}/: one "
                              "complete ArcGIS Export Tiles folder per split (hard links), each loadable alone.")

    def chip_params(self) -> ChipParams:
        return ChipParams(chip_size=self.chip_size, stride=self.stride, min_labeled_pixels=self.min_labeled_pixels,
                          max_nodata_fraction=self.max_nodata_fraction,
                          split_fractions=tuple(self.split_fractions),  # type: ignore[arg-type]
                          split_block_m=self.split_block_m, split_buffer_m=self.split_buffer_m, seed=self.seed,
                          band_layout=self.band_layout, esri_splits=self.esri_splits)


class ExportChipsParams(ChipOptions):
    composites: list[str] | str = Field(description="Composite COGs (paired with labels by tile) or an output_dir.")
    labels: list[str] | str = Field(description="Label COGs or the output_dir of gedi-labels.")
    output_dir: str = Field(description="Export folder (Esri Export Tiles + TerraTorch layouts).")
    force: bool = False


_NORM_MEAN_DEFAULT = _TRAIN.norm_mean
_NORM_STD_DEFAULT = _TRAIN.norm_std
NORM_MEAN_HELP = ("Per-band input means (HLS units x 10000) for a foreign (granite/TerraTorch) checkpoint or a model "
                  "trained from scratch; unset: granite's published ones for a foreign checkpoint, the export's "
                  "training split from scratch. A project checkpoint always uses its own.")
NORM_STD_HELP = "Per-band input standard deviations, with norm_mean (see there)."


class TrainOptions(_Model):
    model: Literal["tiny", "swin_t", "swin_b"] | None = Field(
        _TRAIN.model, description="Model preset (swin_b = granite); unset: tiny, or the init checkpoint's preset.")
    epochs: int = Field(_TRAIN.epochs, ge=1, description="Maximum epochs (early stopping on validation loss).")
    batch_size: int = Field(_TRAIN.batch_size, ge=2, description="Chips per step (>= 2: the decoder uses BatchNorm).")
    lr: float | None = Field(_TRAIN.lr, gt=0, description="AdamW learning rate; unset = the preset's default "
                             "(granite swin_b: 3.1e-4).")
    init_checkpoint: str | None = Field(_TRAIN.init_checkpoint, description="Local checkpoint to start from "
                                        "(never downloaded).")
    freeze_backbone: bool = Field(_TRAIN.freeze_backbone, description="Train the decoder/head only "
                                  "(granite frozen-encoder).")
    seed: int = Field(_TRAIN.seed, description="Seed of weights, batch order and augmentations.")
    device: str = Field(_TRAIN.device, description="auto, cpu, cuda, cuda:N.")
    crop_size: int | None = Field(_TRAIN.crop_size, ge=16, description="Training crop in px (random crops "
                                  "around labelled pixels); unset: 64 px for tiny, else the chip size.")
    norm_mean: list[float] | None = Field(_NORM_MEAN_DEFAULT, description=NORM_MEAN_HELP)
    norm_std: list[float] | None = Field(_NORM_STD_DEFAULT, description=NORM_STD_HELP)

    def train_config(self) -> TrainConfig:
        return TrainConfig(model=self.model, epochs=self.epochs, batch_size=self.batch_size, lr=self.lr,
                           init_checkpoint=self.init_checkpoint, freeze_backbone=self.freeze_backbone,
                           seed=self.seed, device=self.device, crop_size=self.crop_size,
                           norm_mean=tuple(self.norm_mean) if self.norm_mean is not None else None,
                           norm_std=tuple(self.norm_std) if self.norm_std is not None else None)


class TrainModelParams(TrainOptions):
    export: str = Field(description="Chips export folder (from export-chips).")
    output_dir: str = Field(description="Folder for checkpoints and training history.")
    force: bool = False


class IntervalParams(_Model):
    level: float = Field(_INTERVALS.level, ge=0.5, lt=1, description="Nominal coverage of the per-pixel prediction "
                         "intervals (split-conformal; they cover a GEDI-like label of the pixel, not its true AGB).")
    n_bins: int = Field(_INTERVALS.n_bins, ge=1, description="Bins of the predicted AGB (quantile edges), each with "
                        "its own interval (Mondrian conformal).")
    min_bin_pixels: int = Field(_INTERVALS.min_bin_pixels, ge=1, description="Calibration pixels a bin needs "
                                "(smaller bins merge with a neighbour).")
    split: Literal["train", "val", "test"] = Field(_INTERVALS.split, description="Calibration split (coverage is "
                                                   "reported on the evaluated split).")

    def interval_options(self) -> IntervalOptions:
        return IntervalOptions(level=self.level, n_bins=self.n_bins, min_bin_pixels=self.min_bin_pixels,
                               split=self.split)


class TotalsParams(_Model):
    carbon_fraction: float = Field(_TOTALS.carbon_fraction, gt=0, le=1, description="Mg carbon per Mg dry biomass "
                                   "(IPCC 2006 default 0.47).")
    level: float = Field(_TOTALS.level, ge=0.5, lt=1, description="Level of the totals' and changes' intervals.")
    block_m: float = Field(_TOTALS.block_m, gt=0, description="Side (m) of the blocks inside which pixel errors "
                           "are taken as fully correlated (independent between blocks).")
    bias_correction: bool = Field(_TOTALS.bias_correction, description="Add the calibration's per-bin mean "
                                  "residual to the map sum (difference estimator).")

    def totals_options(self) -> TotalsOptions:
        return TotalsOptions(carbon_fraction=self.carbon_fraction, level=self.level, block_m=self.block_m,
                             bias_correction=self.bias_correction)


class EvaluateModelParams(_Model):
    checkpoint: str = Field(description="Checkpoint file.")
    model: str | None = Field(None, description="Model preset when the checkpoint does not name one.")
    export: str = Field(description="Chips export folder.")
    split: Literal["train", "val", "test"] = "test"
    output_dir: str = Field(description="Folder for metrics.json, calibration.json and plots.")
    norm_mean: list[float] | None = Field(_NORM_MEAN_DEFAULT, description=NORM_MEAN_HELP)
    norm_std: list[float] | None = Field(_NORM_STD_DEFAULT, description=NORM_STD_HELP)
    intervals: IntervalParams | None = Field(default_factory=IntervalParams, description="Prediction intervals "
                                             "calibrated on a split (null: none).")
    force: bool = False


class PredictMapParams(_Model):
    checkpoint: str = Field(description="Checkpoint file.")
    composite: str = Field(description="Composite COG to map.")
    output_dir: str | None = Field(None, description="Folder for the biomass COG (default: beside the composite).")
    model: str | None = Field(None, description="Model preset when the checkpoint does not name one.")
    norm_mean: list[float] | None = Field(_NORM_MEAN_DEFAULT, description=NORM_MEAN_HELP)
    norm_std: list[float] | None = Field(_NORM_STD_DEFAULT, description=NORM_STD_HELP)
    calibration: str | None = Field(None, description="calibration.json of the evaluation: adds the agb_lower / "
                                    "agb_upper interval bands.")
    force: bool = False


class SampleWorldParams(_Model):
    output_dir: str = Field(description="Folder for the generated world.")
    size: Literal["small", "demo", "benchmark"] = "demo"
    seed: int = 0


class SampleWorldOption(_Model):
    size: Literal["small", "demo", "benchmark"] = "demo"
    seed: int = 0
    output_dir: str | None = Field(None, description="Where to write it (default <output_dir>/world).")
    serve: Literal["earthdata", "local"] = Field(
        "earthdata", description="earthdata: every COG and granule is read through the loopback Earthdata "
        "emulator (login host, protected data host, pre-signed URLs) with a demo token, as from NASA; "
        "local: STAC hrefs are local paths.")


class PipelineTraining(TrainOptions):
    eval_split: Literal["val", "test"] = "test"


class ChangeParams(_Model):
    loss_threshold: float = Field(_CHANGE.loss_threshold, gt=0, description="Mg/ha: pixels whose AGB fell "
                                  "(rose) by more count as loss (gain) in the change table.")

    def change_options(self) -> ChangeOptions:
        return ChangeOptions(loss_threshold=self.loss_threshold)


class _RunArea(_Model):
    """An area and the years a run maps (shared by biomass-pipeline, map-biomass and yearly-biomass)."""

    aoi: AoiType | None = Field(None, description="Area (bbox, GeoJSON or file). Taken from the sample world if unset.")
    year: int | None = Field(None, ge=1984, le=2100, description="The requested year (its default season: "
                             "hemisphere leaf-on; tropics: the 4-month window with the lowest mean scene cloud "
                             "cover). Unset: the last season that has ended by `as_of` (scheduled runs).")
    season: SeasonParam | None = Field(None, description="Explicit window of the requested year (overrides "
                                       "its default season; other years keep theirs).")
    map_years: list[int] | None = Field(None, description="Years to map (default: the requested year, and the "
                                        "year before it with `previous_year`). Needs HLS scenes, not GEDI.")
    previous_year: bool = Field(False, description="Also map the year before the requested one (default "
                                "map_years only), so the change table shows the last year's change.")
    as_of: date | None = Field(None, description="The UTC date the run treats as today (which season has "
                               "ended); unset: the real date. For back-fills and tests.")
    output_dir: str = Field(description="Root folder of every output of the run ('{year}' is replaced by the year).")
    dask_address: str | None = Field(None, validate_default=True, description="Dask scheduler (tcp://host:8786) "
                                     "for the composites; unset: $AGB_DASK_ADDRESS of the worker, else local.")
    force: bool = Field(False, description="Re-run every stage even when cached results exist.")
    sample_world: SampleWorldOption | None = Field(None, description="Run on the embedded sample world served by a "
                                                   "loopback STAC API and Earthdata emulator (no network, "
                                                   "no real credentials).")
    hls: HlsOptions = Field(default_factory=HlsOptions)
    change: ChangeParams = Field(default_factory=ChangeParams)
    totals: TotalsParams = Field(default_factory=TotalsParams, description="Area totals (Mg AGB, Mg C) of every "
                                 "map year and their change, with intervals (needs an interval calibration).")
    catalog: bool = Field(True, description="Add the run's outputs to the static STAC catalog "
                          "<output_dir>/catalog/ (validated offline; a later run adds to it).")

    _aoi_ok = field_validator("aoi")(classmethod(lambda cls, v: v if v is None else _check_aoi(v)))
    _dask_env = field_validator("dask_address", mode="before")(classmethod(lambda cls, v: v or env_dask_address()))

    def wanted_map_years(self, year: int) -> list[int] | None:
        """``map_years``, else ``[year - 1, year]`` with ``previous_year``, else None (= [year])."""
        if self.map_years:
            return sorted(set(self.map_years))
        return [year - 1, year] if self.previous_year else None

    def check_timeline(self, training: bool, training_years: list[int] | None = None) -> None:
        """Raise (core.timeline.TimelineError) when a map year has no HLS scene or a training season no GEDI
        shot. Without ``aoi`` (the sample world's) the flow checks it once the world is known."""
        from core.seasons import plan_years

        geom = _geom_or_none(self.aoi) if self.aoi is not None else None
        if geom is None or self.year is None:
            return
        plan_years(geom, self.year, season=self.season.model_dump() if self.season else None,
                   map_years=self.wanted_map_years(self.year), training_years=training_years,
                   collection=self.hls.collection, train=training)

    @model_validator(mode="after")
    def _area(self) -> _RunArea:
        if self.sample_world is None and self.aoi is None:
            raise ValueError("give `aoi` (and `year` or `season`), or `sample_world`")
        if self.year is None and self.season is not None:
            self.year = int(self.season.end[:4])
        if self.sample_world is None and self.year is None:
            self.year = last_finished_season_year(self.aoi, self.as_of)  # scheduled runs: the season just ended
        if self.year is not None and "{year}" in self.output_dir:
            self.output_dir = self.output_dir.replace("{year}", str(self.year))
        return self


class MapBiomassParams(_RunArea):
    checkpoint: str | None = Field(None, description="Model checkpoint to map with; unset: the catalog's model "
                                   "(`catalog_input`), else the area's current model "
                                   "(<output_dir>/model/current.json, written by biomass-pipeline).")
    calibration: str | None = Field(None, description="calibration.json of the checkpoint's evaluation (interval "
                                    "bands and totals); unset: the catalog's or the area model's.")
    catalog_input: str | None = Field(None, description="A run's STAC catalog (catalog.json or its folder): map "
                                      "with its model and calibration, reusing its composites of a map year "
                                      "when they are of the same window and cover the area (files checked "
                                      "against their checksums).")

    @model_validator(mode="after")
    def _timeline(self) -> MapBiomassParams:
        if self.checkpoint and self.catalog_input:
            raise ValueError("give `checkpoint` or `catalog_input` (whose model is used), not both")
        self.check_timeline(training=False)
        return self


class BiomassPipelineParams(_RunArea):
    training_years: list[int] | None = Field(None, description="Seasons to train on (each needs GEDI shots). "
                                             "Default: the requested season when GEDI covers it, else every "
                                             "season GEDI covers (north 2019-2022 and 2024).")
    gedi: GediOptions = Field(default_factory=GediOptions)
    chips: ChipOptions = Field(default_factory=ChipOptions)
    training: PipelineTraining = Field(default_factory=PipelineTraining)
    intervals: IntervalParams | None = Field(default_factory=IntervalParams, description="Prediction intervals "
                                             "calibrated in the evaluation (interval bands on every map, totals' "
                                             "intervals); null: none (and no totals).")

    @model_validator(mode="after")
    def _timeline(self) -> BiomassPipelineParams:
        self.check_timeline(training=True, training_years=self.training_years)
        return self


class YearlyBiomassParams(BiomassPipelineParams):
    """A scheduled yearly run: map the season just finished (and the year before, for the change) with the
    area's current model, training it first (biomass-pipeline) when the area has none."""

    previous_year: bool = Field(True, description="Also map the year before (change since last year).")
