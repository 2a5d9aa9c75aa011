"""Prediction intervals: conformal ranks (table tests), cluster-robust SE by hand, Mondrian bins, coverage on
exchangeable data, the calibration file, and the interval bands predict_map writes."""

from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from sampleworld.synthetic.export import write_synthetic_export
from training.config import TrainConfig
from training.mapping import predict_map
from training.train import train_model
from training.uncertainty import (
    BinCalibration,
    Calibration,
    CalibrationError,
    IntervalOptions,
    bin_edges,
    calibrate,
    cluster_mean_se,
    conformal_offsets,
    coverage,
)


@pytest.mark.parametrize(("n", "level", "expected"), [
    (19, 0.9, (1.0, 19.0)),   # floor(20 * .05) = 1, ceil(20 * .95) = 19
    (39, 0.9, (2.0, 38.0)),   # floor(40 * .05) = 2, ceil(40 * .95) = 38
    (99, 0.8, (10.0, 90.0)),  # floor(100 * .1) = 10, ceil(100 * .9) = 90
    (200, 0.9, (10.0, 191.0)),  # floor(201 * .05) = 10, ceil(201 * .95) = 191
])
def test_conformal_offsets_are_the_finite_sample_ranks(n, level, expected):
    residuals = np.random.default_rng(0).permutation(np.arange(1, n + 1, dtype=np.float64))
    assert conformal_offsets(residuals, level) == expected


def test_too_few_residuals_for_the_level_is_an_error():
    with pytest.raises(CalibrationError, match="too few"):
        conformal_offsets(np.arange(10.0), 0.9)


def test_cluster_robust_se_by_hand():
    # mean 2.5; cluster sums of deviations -2 and +2; se^2 = 2/1 * (4 + 4) / 4^2 = 1
    se, k = cluster_mean_se(np.array([1.0, 2.0, 3.0, 4.0]), np.array([7, 7, 9, 9]))
    assert (se, k) == (pytest.approx(1.0), 2)
    se1, k1 = cluster_mean_se(np.array([1.0, 2.0, 3.0, 4.0]), np.zeros(4))
    assert k1 == 1 and se1 == pytest.approx(np.std([1, 2, 3, 4], ddof=1))


def test_bin_edges_merge_small_and_tied_bins():
    pred = np.concatenate([np.zeros(500), np.linspace(1, 100, 500)])  # half of the predictions are 0 (ReLU)
    edges = bin_edges(pred, IntervalOptions(n_bins=4, min_bin_pixels=200))
    counts = np.bincount(np.searchsorted(edges, pred, side="right"))
    assert len(edges) == len(counts) - 1 and (counts >= 200).all() and counts.sum() == 1000
    assert bin_edges(pred[:250], IntervalOptions(n_bins=4, min_bin_pixels=200)) == []


@pytest.mark.parametrize(("kwargs", "match"), [({"level": 1.0}, "level"), ({"n_bins": 0}, "n_bins"),
                                               ({"min_bin_pixels": 5}, "min_bin_pixels")])
def test_bad_interval_options(kwargs, match):
    with pytest.raises(CalibrationError, match=match):
        IntervalOptions(**kwargs)


def _heteroscedastic(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Predictions 0-300 Mg/ha, labels = prediction + skewed noise whose spread grows with the prediction."""
    rng = np.random.default_rng(seed)
    pred = rng.uniform(0, 300, n)
    label = np.maximum(pred + (5 + 0.3 * pred) * (rng.gamma(2.0, 1.0, n) - 2.0), 0.0)
    return pred, label, rng.integers(0, 400, n)


def test_mondrian_intervals_cover_in_every_bin_on_exchangeable_data():
    pred, label, clusters = _heteroscedastic(8000, 0)
    cal = calibrate(pred, label, clusters, options=IntervalOptions(level=0.9, n_bins=4, min_bin_pixels=200))
    assert len(cal.bins) == 4 and cal.n_pixels == 8000
    assert [b.lo for b in cal.bins][0] is None and cal.bins[-1].hi is None
    tp, tl, _ = _heteroscedastic(40000, 1)
    cov = coverage(cal, tp, tl, split="test")
    assert cov["coverage"] == pytest.approx(0.9, abs=0.01) and not cov["in_sample"]
    assert all(b["coverage"] == pytest.approx(0.9, abs=0.02) for b in cov["per_bin"])
    widths = [b.upper_offset - b.lower_offset for b in cal.bins]
    assert widths == sorted(widths)  # the spread grows with biomass: so do the intervals
    one = calibrate(pred, label, clusters, options=IntervalOptions(level=0.9, n_bins=1, min_bin_pixels=200))
    per_bin_one = coverage(one, tp, tl, split="test")
    lowest = np.searchsorted(cal.edges, tp, side="right") == 0  # a single global interval over-covers low AGB
    lo1, hi1 = one.interval(tp[lowest])
    assert np.mean((tl[lowest] >= lo1) & (tl[lowest] <= hi1)) > 0.97 and per_bin_one["coverage"] > 0.88


def test_interval_is_clipped_at_zero_and_brackets_the_prediction():
    cal = Calibration(level=0.9, split="val", n_pixels=400, n_clusters=4, bins=[
        BinCalibration(lo=None, hi=50.0, n=200, n_clusters=2, lower_offset=-20.0, upper_offset=15.0,
                       residual_mean=0.0, residual_sd=10.0, mean_se=1.0),
        BinCalibration(lo=50.0, hi=None, n=200, n_clusters=2, lower_offset=-60.0, upper_offset=80.0,
                       residual_mean=5.0, residual_sd=40.0, mean_se=3.0)])
    lower, upper = cal.interval(np.array([0.0, 10.0, 49.9, 50.0, 200.0], np.float32))
    assert lower.tolist() == pytest.approx([0.0, 0.0, 29.9, 0.0, 140.0], abs=1e-4)
    assert upper.tolist() == pytest.approx([15.0, 25.0, 64.9, 130.0, 280.0], abs=1e-4)


def test_calibration_file_round_trip_and_bad_file(tmp_path):
    pred, label, clusters = _heteroscedastic(1000, 2)
    cal = calibrate(pred, label, clusters, checkpoint="best.ckpt", export="chips")
    path = cal.write(tmp_path / "calibration.json")
    back = Calibration.read(path)
    assert back == cal and back.digest() == cal.digest()
    assert "not its true AGB" in json.loads(path.read_text())["covers"]
    (tmp_path / "bad.json").write_text('{"level": 0.9}')
    with pytest.raises(CalibrationError, match="bad.json"):
        Calibration.read(tmp_path / "bad.json")


def test_too_few_calibration_pixels_is_named():
    with pytest.raises(CalibrationError, match="split 'val'"):
        calibrate(np.arange(50.0), np.arange(50.0), np.zeros(50))


def test_predict_map_writes_interval_bands(tmp_path):
    exp = write_synthetic_export(tmp_path / "export", chip=64, grid=(3, 2), seed=4)
    res = train_model(export=exp["export"], output_dir=str(tmp_path / "run"), config=TrainConfig(
        model="tiny", epochs=1, batch_size=2, steps_per_epoch=2, device="cpu", cpu_threads=1))
    pred, label, clusters = _heteroscedastic(2000, 3)
    cal_path = calibrate(pred, label, clusters).write(tmp_path / "calibration.json")
    out = predict_map(checkpoint=res.best_checkpoint, composite=exp["composite"], output_dir=str(tmp_path / "maps"),
                      crop=64, stride=48, calibration=str(cal_path))
    assert out.bands == ["agb", "agb_lower", "agb_upper"] and out.calibration == str(cal_path)
    with rasterio.open(out.map) as m:
        assert m.count == 3 and m.descriptions == ("agb", "agb_lower", "agb_upper")
        assert m.units == ("Mg/ha",) * 3 and m.nodatavals == (-9999.0,) * 3
        assert m.tags()["INTERVAL_LEVEL"] == "0.9" and "not its true AGB" in m.tags()["INTERVAL_COVERS"]
        agb, lower, upper = m.read()
    nod = agb == -9999.0
    assert nod.any() and np.array_equal(nod, lower == -9999.0) and np.array_equal(nod, upper == -9999.0)
    assert (lower[~nod] >= 0).all() and (lower[~nod] <= agb[~nod] + 1e-4).all()
    assert (upper[~nod] >= agb[~nod]).all()
    assert predict_map(checkpoint=res.best_checkpoint, composite=exp["composite"], output_dir=str(tmp_path / "maps"),
                       crop=64, stride=48, calibration=str(cal_path)).skipped
    plain = predict_map(checkpoint=res.best_checkpoint, composite=exp["composite"],
                        output_dir=str(tmp_path / "maps"), crop=64, stride=48)
    assert not plain.skipped and plain.bands == ["agb"]  # other inputs: recomputed, one band


def test_evaluate_calibrates_on_val_and_reports_coverage(tmp_path):
    from training.evaluate import evaluate_model

    exp = write_synthetic_export(tmp_path / "export", chip=64, grid=(4, 3), seed=2)
    res = train_model(export=exp["export"], output_dir=str(tmp_path / "run"), config=TrainConfig(
        model="tiny", epochs=1, batch_size=4, steps_per_epoch=2, device="cpu", cpu_threads=1))
    ev = evaluate_model(checkpoint=res.best_checkpoint, export=exp["export"], output_dir=str(tmp_path / "eval"),
                        intervals=IntervalOptions(min_bin_pixels=100))
    cal = Calibration.read(ev.calibration)
    assert cal.split == "val" and cal.n_pixels > 100 and cal.checkpoint == res.best_checkpoint
    saved = json.loads(open(ev.metrics_path).read())
    assert saved["calibration"] == ev.calibration and saved["interval"]["n"] == ev.n_pixels
    assert saved["interval"]["in_sample"] is False and 0 <= saved["interval"]["coverage"] <= 1
    on_val = evaluate_model(checkpoint=res.best_checkpoint, export=exp["export"], split="val",
                            output_dir=str(tmp_path / "eval_val"), intervals=IntervalOptions(min_bin_pixels=100))
    assert on_val.interval["in_sample"] is True and on_val.interval["coverage"] >= 0.9  # conformal in-sample
    none = evaluate_model(checkpoint=res.best_checkpoint, export=exp["export"], output_dir=str(tmp_path / "e0"),
                          intervals=None)
    assert none.calibration is None and none.interval is None
    few = evaluate_model(checkpoint=res.best_checkpoint, export=exp["export"], output_dir=str(tmp_path / "e1"),
                         intervals=IntervalOptions(min_bin_pixels=100_000))
    assert few.calibration is None and any("no prediction intervals" in n for n in few.notes)
