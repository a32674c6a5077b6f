"""``mosaic login`` and ``mosaic auth check``: store credentials for the user, see what a read would use.

Imports stay inside the commands: ``mosaic --help`` loads none of the engine.
"""

from __future__ import annotations

import sys
from typing import Any

import click

__all__ = ["auth", "check", "login"]


@click.command()
@click.option(
    "--token",
    envvar="EARTHDATA_TOKEN",
    default=None,
    help="The Earthdata token (from urs.earthdata.nasa.gov, 'Generate Token'); asked for if not given "
    "(hidden), or read from $EARTHDATA_TOKEN.",
)
@click.option(
    "--username",
    default=None,
    help="Store an Earthdata user name and password (asked for, hidden) instead of a token.",
)
@click.option("--token-stdin", is_flag=True, help="Read the token from standard input (scripts).")
def login(token: str | None, username: str | None, token_stdin: bool) -> None:
    """Store an Earthdata token (or user and password) in the user's credentials file, mode 0600.

    The file is $XDG_CONFIG_HOME/mosaic/credentials.json (else ~/.config/mosaic/credentials.json);
    TemporaryS3Profile and mosaic.auth.earthdata() use its token when no token is given and
    $EARTHDATA_TOKEN is not set. Nothing stored is ever printed.
    """
    from mosaic.io.userconfig import save

    if username is not None:
        password = click.prompt(f"Earthdata password for {username}", hide_input=True)
        path = save("earthdata", {"username": username, "password": password})
        click.echo(f"stored the Earthdata user name and password in {path} (readable by you only)")
        return
    if token_stdin:
        token = sys.stdin.read().strip()
    elif token is None:
        token = click.prompt("Earthdata token", hide_input=True)
    if not token:
        raise click.BadParameter("the token is empty", param_hint="--token")
    path = save("earthdata", {"token": token})
    click.echo(f"stored the Earthdata token in {path} (readable by you only)")


@click.group()
def auth() -> None:
    """Credentials: which profile a file gets, and whether reading it works."""


def _default_profiles(href: str, s3credentials: str | None, endpoint: str | None) -> list[Any]:
    """The profiles ``mosaic auth check`` tries: a temporary-keys endpoint, NASA's table, Azure SAS."""
    from urllib.parse import urlsplit

    from mosaic.auth import DAACS, PlanetaryComputerProfile, TemporaryS3Profile, earthdata
    from mosaic.io.paths import gdal_path

    path = gdal_path(href)
    if s3credentials is not None:
        bucket = path[len("/vsis3/") :].split("/", 1)[0] if path.startswith("/vsis3/") else ""
        if not bucket:
            raise click.BadParameter(f"{href} is not an s3:// href", param_hint="--s3credentials")
        return [TemporaryS3Profile(f"s3://{bucket}", s3credentials, endpoint=endpoint)]
    if path.startswith("/vsis3/"):
        bucket = path[len("/vsis3/") :].split("/", 1)[0]
        if any(bucket in d["buckets"] for d in DAACS.values()):
            return earthdata(bucket)
    if path.startswith("/vsicurl/"):
        host = urlsplit(path[len("/vsicurl/") :]).hostname or ""
        if host.endswith(".blob.core.windows.net"):
            return [PlanetaryComputerProfile()]
        for daac in DAACS.values():
            if urlsplit(str(daac["s3credentials"])).hostname == host:
                return earthdata(next(k for k, v in DAACS.items() if v is daac), direct=False)
    return []


@auth.command()
@click.argument("href")
@click.option(
    "--s3credentials",
    default=None,
    help="Temporary S3 keys from this endpoint (NASA's s3credentials JSON), with the stored token.",
)
@click.option("--endpoint", default=None, help="An S3-compatible endpoint URL, for --s3credentials.")
def check(href: str, s3credentials: str | None, endpoint: str | None) -> None:
    """Say which credential profile HREF gets, and whether a test read of it succeeds (no secret shown).

    Without options the profiles are those mosaic knows: NASA's DAAC buckets and HTTPS hosts
    (mosaic.auth.earthdata, token from $EARTHDATA_TOKEN or `mosaic login`), Azure Blob URLs signed
    with Planetary Computer SAS tokens; else GDAL's own configuration applies (AWS_* variables,
    ~/.aws...). Exits with 1 when the read fails.
    """
    import rasterio

    from mosaic.auth import access_for, find_profile
    from mosaic.cli import one_line
    from mosaic.errors import MosaicError
    from mosaic.io.gdalenv import gdal_env, options_env
    from mosaic.io.paths import redact

    profiles = _default_profiles(href, s3credentials, endpoint)
    profile = find_profile(href, profiles)
    click.echo(f"href: {redact(href)}")
    if profile is None:
        click.echo("profile: none (GDAL's own configuration: environment variables, ~/.aws, ~/.netrc)")
    else:
        source = getattr(profile, "credentials_url", None) or getattr(profile, "token_url", None)
        detail = f", credentials from {redact(source)}" if source else ""
        click.echo(f"profile: {type(profile).__name__} for {redact(profile.prefix)}{detail}")
    try:
        access = access_for(href, profiles)
        if access.options:
            click.echo(f"GDAL settings: {', '.join(sorted(access.options))}")
        with gdal_env(), options_env(access.options), rasterio.open(access.href) as src:
            block = src.read(1, window=((0, min(1, src.height)), (0, min(1, src.width))))
            click.echo(
                f"read: ok ({src.driver}, {src.width} x {src.height} px, {src.count} band(s), {block.dtype})"
            )
    except (MosaicError, OSError, rasterio.errors.RasterioError) as exc:
        from mosaic.io.paths import redact_exception

        redact_exception(exc)
        click.echo(f"read: failed: {one_line(exc)}")
        hint = getattr(profile, "hint", None)
        if hint:
            click.echo(f"hint: {hint}")
        raise SystemExit(1) from None
