"""The titiler side of ``serve_latency.py --titiler``: rio-tiler's ``mosaic_reader`` behind FastAPI.

Runs in its own venv (``benchmarks/.venv-titiler``: titiler.core, rio-tiler, uvicorn), never in
mosaic's. ``MOSAIC_BENCH_ASSETS`` names a JSON list of ``{"path", "bbox", "datetime", "id"}`` (the
scenes' B02 COGs and lon/lat boxes). A tile reads the assets whose box intersects the tile's, in
(datetime, id) order (the order ``mosaic serve``'s ``first`` takes them in), each with rio-tiler's
``Reader.tile`` (nearest resampling and reprojection), fused by ``FirstMethod``, rescaled 0-3000 and
drawn with a rio-tiler colormap (``viridis`` unless ``?colormap=``) by titiler.core's ``render_image``,
as titiler's ``/tiles`` endpoint does. A tile no asset covers is a transparent PNG, as ``mosaic serve``
answers.
"""

from __future__ import annotations

import json
import os

import numpy as np
from fastapi import FastAPI, Query, Response
from rio_tiler.colormap import cmap
from rio_tiler.constants import WEB_MERCATOR_TMS
from rio_tiler.errors import EmptyMosaicError
from rio_tiler.io import Reader
from rio_tiler.models import ImageData
from rio_tiler.mosaic import mosaic_reader
from rio_tiler.mosaic.methods import FirstMethod
from titiler.core.resources.enums import ImageType
from titiler.core.utils import render_image

with open(os.environ["MOSAIC_BENCH_ASSETS"]) as f:
    ASSETS = sorted(json.load(f), key=lambda a: (a["datetime"], a["id"]))

app = FastAPI()


def _read(path: str, x: int, y: int, z: int) -> ImageData:
    with Reader(path) as src:
        return src.tile(x, y, z, indexes=(1,), resampling_method="nearest", reproject_method="nearest")


@app.get("/tiles/{z}/{x}/{y}.png")
def tile(z: int, x: int, y: int, colormap: str = Query("viridis")) -> Response:
    west, south, east, north = WEB_MERCATOR_TMS.bounds(x, y, z)
    paths = [
        a["path"]
        for a in ASSETS
        if a["bbox"][0] < east and a["bbox"][2] > west and a["bbox"][1] < north and a["bbox"][3] > south
    ]
    try:
        img, _ = mosaic_reader(paths, _read, x, y, z, pixel_selection=FirstMethod())
    except EmptyMosaicError:
        img = ImageData(np.ma.masked_all((1, 256, 256), dtype="uint16"))
    content, media_type = render_image(
        img, colormap=cmap.get(colormap), output_format=ImageType.png, rescale=((0, 3000),)
    )
    return Response(content, media_type=media_type)
