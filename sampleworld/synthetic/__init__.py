"""Small synthetic inputs for tests and benchmarks (not the sample world): HLS scenes (``scenes``), GEDI
granules and a range-serving HTTP handler (``granules``), composite/label pairs (``pairs``) and chips
exports (``export``)."""
