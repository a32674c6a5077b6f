"""The two demo scenes across the 12E UTM seam, as the remote-read tests move them onto servers.

A mosaic of their ``B02`` on a small lon/lat grid (:data:`GRID` over :data:`SEAM12`) read from a
server must equal the same mosaic of the files on disk (:func:`local_mosaic`); :func:`moved` gives the
index of the same rows at other hrefs, :func:`s3_profile` the profile a SeaweedFS user reads with.
"""

from __future__ import annotations

import dataclasses

import numpy as np

import mosaic
from mosaic import TileIndex
from mosaic.auth import S3Profile, Secret
from servers import SeaweedFS

SEAM12 = (11.88, 45.40, 12.12, 45.58)
SCENES = ("S32-seam12-20240601", "S33-seam12-20240601")
GRID = dict(resolution=0.0008, bands="B02", groupby=None)  # 300 x 225 px: quick


def moved(rows, hrefs) -> TileIndex:
    return TileIndex.from_records([dataclasses.replace(r, href=h) for r, h in zip(rows, hrefs, strict=True)])


def local_mosaic(rows, chunks: int = 2048) -> np.ndarray:
    """The same mosaic from the files on disk (same chunks: nearest picks may depend on them)."""
    index = TileIndex.from_records(rows)
    return mosaic.load(SEAM12, "EPSG:4326", index=index, chunks=chunks, **GRID).B02.values


def s3_profile(server: SeaweedFS, bucket: str, user: str | None) -> S3Profile:
    if user is None:
        return S3Profile(f"s3://{bucket}", endpoint=server.endpoint_url, region=server.region, unsigned=True)
    u = server.users[user]
    return S3Profile(
        f"s3://{bucket}",
        access_key_id=u.access_key,
        secret_access_key=Secret(u.secret_key),
        endpoint=server.endpoint_url,
        region=server.region,
    )
