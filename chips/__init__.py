"""Training-chip export (no Prefect): composites + label rasters -> Esri "Export Tiles" and TerraTorch layouts.

Entry point :func:`chips.export.export_chips`; the export's contract (``chips_export.json``) is
:class:`chips.manifest.ExportManifest`, written by the exporter and read by training.
"""
