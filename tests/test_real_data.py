"""The committed real fixtures are the files their README describes, byte for byte."""

import hashlib
import re
import tarfile

import real_data


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_committed_files_match_the_hashes_in_their_readme():
    readme = (real_data.REAL / "README.md").read_text()
    rows = {m[0]: m[1] for m in re.findall(r"^\| `([^`]+)` \|.*\| `([0-9a-f]{64})` \|$", readme, re.M)}
    assert set(rows) == {
        "L7_ETMs.tif",
        "olinda_dem_utm25s.tif",
        "sentinel-2-l2a-pc.json",
        "landsat-c2-l2-pc.json",
    }
    for name, digest in rows.items():
        assert _sha256((real_data.REAL / name).read_bytes()) == digest, name
    with tarfile.open(real_data.MGRS_ARCHIVE) as archive:
        members = {m.name: _sha256(archive.extractfile(m).read()) for m in archive.getmembers()}
    assert sorted(members) == [f"sentinel2_grid.{ext}" for ext in ("dbf", "prj", "qpj", "shp", "shx")]
    for ext in ("shp", "dbf"):
        assert f"`.{ext}` `{members[f'sentinel2_grid.{ext}']}`" in readme
