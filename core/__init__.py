"""Values and I/O every stage shares (no Prefect).

``core.grid`` the one grid value and MGRS tiling; ``core.area`` AOI parsing and seasons;
``core.bands`` band tables per collection; ``core.constants`` nodata values, scale factors, default STAC
endpoints and collection ids; ``core.files`` atomic writes; ``core.http`` the one retrying HTTP/STAC
layer; ``core.earthdata`` Earthdata Login credentials and sessions for requests and GDAL.
"""
