"""Profiles whose credentials come from an endpoint and expire, URL signing, Azure and Google Cloud.

The public face is :mod:`mosaic.auth` (which re-exports everything here). The refreshing profiles keep
only how to get credentials (a URL, a :class:`~mosaic.auth.Secret` token); what they fetch lives in
:mod:`mosaic.io.credentials`' process-wide cache, refreshed before it expires and after a refused read.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mosaic.auth import SecretLike, _norm, _reveal, _secret
from mosaic.errors import AuthenticationError, InvalidInputError
from mosaic.io.credentials import DEFAULT_REFRESH_MARGIN, Credentials, ProviderLike, current, parse_expiration

__all__ = [
    "DAACS",
    "AzureProfile",
    "GCSProfile",
    "PlanetaryComputerProfile",
    "RefreshingProfile",
    "Signer",
    "TemporaryS3Profile",
    "earthdata",
    "earthdata_token",
]

_TIMEOUT = 30.0


def _refresh_margin(value: float, where: str) -> float:
    if not isinstance(value, (int, float)) or value < 0:
        raise InvalidInputError(f"{where}: refresh_margin must be a number of seconds >= 0, got {value!r}")
    return float(value)


# ----------------------------------------------------------------------------------- generic provider


@dataclass(frozen=True, slots=True)
class RefreshingProfile:
    """Any store under ``prefix``, with credentials from ``provider`` (cached, refreshed before expiry).

    ``provider`` returns :class:`mosaic.io.credentials.Credentials`: GDAL options (``AWS_*``,
    ``AZURE_*``, ``GDAL_HTTP_HEADERS``...) and/or a query string to sign URLs with, and their expiry.
    It is called at most once at a time per process, ``refresh_margin`` seconds before the expiry, and
    again when a read is refused. It travels pickled to dask workers (each fetches for itself): make it
    a module-level function or a picklable object that compares equal to its copies, so that a worker
    shares one fetch between its tasks.

    Attributes:
        prefix: the hrefs it applies to.
        provider: a callable (or an object with ``fetch()``) returning ``Credentials``.
        refresh_margin: seconds before the expiry at which credentials are fetched again.
    """

    prefix: str
    provider: ProviderLike
    refresh_margin: float = DEFAULT_REFRESH_MARGIN

    def __post_init__(self) -> None:
        _norm(self.prefix)
        if not callable(self.provider) and not hasattr(self.provider, "fetch"):
            raise InvalidInputError(
                f"RefreshingProfile {self.prefix}: provider must be callable or have fetch()"
            )
        object.__setattr__(self, "refresh_margin", _refresh_margin(self.refresh_margin, self.prefix))

    @property
    def credentials_key(self) -> Hashable:
        """What the cached credentials are filed under in a process."""
        return ("provider", self.provider)

    def credentials(self) -> Credentials:
        """The current credentials (fetched when due)."""
        return current(self.credentials_key, self.provider, self.refresh_margin)

    def gdal_options(self) -> dict[str, str]:
        """The provider's GDAL options."""
        return dict(self.credentials().options)

    def sign(self, href: str) -> str:
        """``href`` with the provider's query (if any) appended."""
        return _append_query(href, self.credentials().query)


def _append_query(href: str, query: str | None) -> str:
    if not query:
        return href
    query = query.lstrip("?")
    return f"{href}{'&' if '?' in href else '?'}{query}"


# ------------------------------------------------------------------------- temporary S3 credentials


def _user_config_token() -> str | None:
    """The Earthdata token ``mosaic login`` stored, if any."""
    from mosaic.io.userconfig import load

    value = load().get("earthdata", {}).get("token")
    return value if isinstance(value, str) and value else None


def earthdata_token(token: SecretLike = None) -> str | None:
    """The Earthdata token: ``token``, else ``$EARTHDATA_TOKEN``, else the one ``mosaic login`` stored."""
    return _reveal(token) or os.environ.get("EARTHDATA_TOKEN") or _user_config_token()


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _get_json(url: str, *, token: str | None, login_host: str | None, what: str) -> Any:
    """GET ``url`` as JSON with a bearer token, else through an Earthdata Login redirect (user/password).

    Raises:
        AuthenticationError: naming ``url`` (never the token): refused (401/403), unreachable, or no JSON.
    """
    shown = urllib.parse.urlsplit(url)._replace(query="", fragment="").geturl()
    request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "mosaic"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
        opener = urllib.request.build_opener(_NoRedirect)  # a bearer token goes to this host only
    else:
        opener = _login_opener(login_host)
    try:
        with opener.open(request, timeout=_TIMEOUT) as answer:
            body = answer.read()
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            hint = "" if token else " (no token: give token=, set $EARTHDATA_TOKEN, or run `mosaic login`)"
            raise AuthenticationError(
                shown, f"{what} endpoint refused the credentials (HTTP {exc.code}){hint}"
            ) from None
        if 300 <= exc.code < 400:
            raise AuthenticationError(
                shown, f"{what} endpoint redirected (HTTP {exc.code}) to a login: give a token"
            ) from None
        raise AuthenticationError(shown, f"{what} endpoint failed: HTTP {exc.code}") from None
    except OSError as exc:
        raise AuthenticationError(shown, f"{what} endpoint unreachable: {type(exc).__name__}") from None
    try:
        return json.loads(body)
    except ValueError:
        raise AuthenticationError(shown, f"{what} endpoint did not answer JSON") from None


def _login_opener(login_host: str | None) -> urllib.request.OpenerDirector:
    """An opener that follows redirects, keeps cookies and answers ``login_host``'s login challenge.

    Only that host gets the user name and password (``$EARTHDATA_USERNAME``/``$EARTHDATA_PASSWORD``,
    else those ``mosaic login --username`` stored, else ``~/.netrc``).
    """
    import http.cookiejar

    handlers: list[Any] = [urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar())]
    user, password = os.environ.get("EARTHDATA_USERNAME"), os.environ.get("EARTHDATA_PASSWORD")
    if login_host and not (user and password):
        from mosaic.io.userconfig import load

        stored = load().get("earthdata", {})
        user, password = stored.get("username"), stored.get("password")
    if login_host and not (user and password):
        import netrc

        try:
            found = netrc.netrc().authenticators(login_host)
        except (OSError, netrc.NetrcParseError):
            found = None
        if found:
            user, password = found[0], found[2]
    if login_host and user and password:
        handlers.append(urllib.request.HTTPBasicAuthHandler(_LoginHostPassword(login_host, user, password)))
    return urllib.request.build_opener(*handlers)


class _LoginHostPassword(urllib.request.HTTPPasswordMgr):
    """The user name and password for one host, on any port and scheme, as curl matches a netrc machine.

    (urllib's own managers match the port too, and take a host without one as port 80 or 443.)
    """

    def __init__(self, host: str, user: str, password: str):
        super().__init__()
        self._host = urllib.parse.urlsplit(f"//{host}").hostname
        self._user, self._password = user, password

    def find_user_password(self, realm: str | None, authuri: str) -> tuple[str | None, str | None]:
        asked = urllib.parse.urlsplit(authuri if "//" in authuri else f"//{authuri}").hostname
        return (self._user, self._password) if asked == self._host else (None, None)


@dataclass(frozen=True, slots=True)
class _S3CredentialsEndpoint:
    """Fetches NASA-style ``s3credentials`` JSON (a picklable provider; equal copies share a cache)."""

    url: str
    token: SecretLike
    login_host: str | None

    def fetch(self) -> Credentials:
        data = _get_json(
            self.url, token=earthdata_token(self.token), login_host=self.login_host, what="s3credentials"
        )
        shown = urllib.parse.urlsplit(self.url)._replace(query="").geturl()
        if not isinstance(data, dict) or not data.get("accessKeyId") or not data.get("secretAccessKey"):
            raise AuthenticationError(
                shown, "s3credentials endpoint answered without accessKeyId/secretAccessKey"
            )
        options = {
            "AWS_ACCESS_KEY_ID": str(data["accessKeyId"]),
            "AWS_SECRET_ACCESS_KEY": str(data["secretAccessKey"]),
        }
        if data.get("sessionToken"):
            options["AWS_SESSION_TOKEN"] = str(data["sessionToken"])
        try:
            expires = parse_expiration(data.get("expiration"))
        except InvalidInputError as exc:
            raise AuthenticationError(shown, f"s3credentials endpoint: {exc}") from None
        return Credentials(options, expires=expires)


@dataclass(frozen=True, slots=True)
class TemporaryS3Profile:
    """S3 under ``prefix`` with temporary keys from a credentials endpoint (NASA's ``s3credentials``).

    ``credentials_url`` is fetched with ``Authorization: Bearer <token>`` (the token from ``token``,
    else ``$EARTHDATA_TOKEN``, else the one ``mosaic login`` stored; without any, through an Earthdata
    Login redirect with ``$EARTHDATA_USERNAME``/``$EARTHDATA_PASSWORD`` or ``~/.netrc``); the answer is
    ``{"accessKeyId", "secretAccessKey", "sessionToken", "expiration": "YYYY-MM-DD HH:MM:SS+00:00"}``
    (an empty session token means none). Keys are fetched once per process and endpoint, again
    ``refresh_margin`` seconds before they expire and when a read is refused; they are never pickled.

    Attributes:
        prefix: ``s3://bucket[/path]`` the keys are for.
        credentials_url: the endpoint handing out the keys.
        token: the bearer token (a :class:`~mosaic.auth.Secret`, e.g. ``Secret.from_env(...)``).
        endpoint: an S3-compatible endpoint (path-style addressing), as :class:`~mosaic.auth.S3Profile`.
        region: the bucket's region (NASA's: ``us-west-2``).
        refresh_margin: seconds before expiry at which keys are fetched again.
        login_host: the Earthdata Login host answering user/password when there is no token.
        hint: what to do when reads are refused even with fresh keys (said in the error).
    """

    prefix: str
    credentials_url: str
    token: SecretLike = field(default=None)
    endpoint: str | None = None
    region: str | None = None
    refresh_margin: float = DEFAULT_REFRESH_MARGIN
    login_host: str | None = "urs.earthdata.nasa.gov"
    hint: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not _norm(self.prefix).startswith("/vsis3/"):
            raise InvalidInputError(
                f"TemporaryS3Profile prefix {self.prefix!r} is not an s3:// or /vsis3/ path"
            )
        if urllib.parse.urlsplit(self.credentials_url).scheme not in ("http", "https"):
            raise InvalidInputError(
                f"TemporaryS3Profile {self.prefix}: credentials_url {self.credentials_url!r} is not an "
                "http(s) URL"
            )
        object.__setattr__(self, "token", _secret(self.token))
        object.__setattr__(self, "refresh_margin", _refresh_margin(self.refresh_margin, self.prefix))

    @property
    def provider(self) -> _S3CredentialsEndpoint:
        """How the keys are fetched."""
        return _S3CredentialsEndpoint(self.credentials_url, self.token, self.login_host)

    @property
    def credentials_key(self) -> Hashable:
        """One cache per endpoint and token: several buckets of one DAAC share a fetch."""
        return ("s3credentials", self.credentials_url, self.token, self.login_host)

    def credentials(self) -> Credentials:
        """The current keys (fetched when due)."""
        return current(self.credentials_key, self.provider, self.refresh_margin)

    def gdal_options(self) -> dict[str, str]:
        """GDAL's ``AWS_*`` settings with the current temporary keys."""
        from mosaic.auth import S3Profile

        keys = self.credentials().options
        opts = S3Profile(self.prefix, endpoint=self.endpoint, region=self.region).gdal_options()
        opts.update(keys)
        opts["AWS_NO_SIGN_REQUEST"] = "NO"
        return opts


# ------------------------------------------------------------------------------------- URL signing


@dataclass(frozen=True, slots=True)
class Signer:
    """Signs hrefs at read time: ``sign(href) -> signed href`` (as odc-stac's ``patch_url``).

    What ``sign=`` of :func:`mosaic.load`, :func:`mosaic.plan`, :func:`mosaic.regrid` and
    :meth:`mosaic.TileIndex.from_stac` turns into. The signed href is what GDAL opens; the index, the
    plan, GTI and virtual exports keep the plain href. ``prefix=""`` signs every href.
    """

    sign: Callable[[str], str]
    prefix: str = ""

    def __post_init__(self) -> None:
        if not callable(self.sign):
            raise InvalidInputError(
                f"sign= takes a callable from href to signed href, got {type(self.sign).__name__}"
            )

    def gdal_options(self) -> dict[str, str]:
        """No GDAL settings: a signer changes the href."""
        return {}

    def __repr__(self) -> str:
        name = getattr(self.sign, "__qualname__", type(self.sign).__name__)
        return f"Signer({name}, prefix={self.prefix!r})"


@dataclass(frozen=True, slots=True)
class _SASTokenEndpoint:
    """Fetches a SAS token for one storage account/container (Planetary Computer's token API)."""

    url: str
    subscription_key: SecretLike

    def fetch(self) -> Credentials:
        token = _reveal(self.subscription_key)
        request_url = self.url
        data = _get_json(request_url, token=None, login_host=None, what="SAS token") if not token else None
        if token:
            request = urllib.request.Request(
                request_url, headers={"Ocp-Apim-Subscription-Key": token, "User-Agent": "mosaic"}
            )
            try:
                with urllib.request.build_opener(_NoRedirect).open(request, timeout=_TIMEOUT) as answer:
                    data = json.loads(answer.read())
            except urllib.error.HTTPError as exc:
                raise AuthenticationError(
                    request_url, f"SAS token endpoint refused: HTTP {exc.code}"
                ) from None
            except (OSError, ValueError) as exc:
                raise AuthenticationError(
                    request_url, f"SAS token endpoint failed: {type(exc).__name__}"
                ) from None
        if not isinstance(data, dict) or not data.get("token"):
            raise AuthenticationError(request_url, "SAS token endpoint answered without a token")
        try:
            expires = parse_expiration(data.get("msft:expiry") or data.get("expiry"))
        except InvalidInputError as exc:
            raise AuthenticationError(request_url, f"SAS token endpoint: {exc}") from None
        return Credentials(query=str(data["token"]).lstrip("?"), expires=expires)


PLANETARY_COMPUTER_TOKENS = "https://planetarycomputer.microsoft.com/api/sas/v1/token"
"""Planetary Computer's SAS token API: ``{base}/{account}/{container}`` answers ``token``, ``msft:expiry``."""


@dataclass(frozen=True, slots=True)
class PlanetaryComputerProfile:
    """Azure Blob URLs signed with SAS tokens fetched per storage account and container (Planetary Computer).

    Matches ``https://<account>.blob.core.windows.net/`` hrefs (``prefix``, default all of them; for
    another endpoint, e.g. an emulator, give ``prefix`` ``http://host:port/<account>``: the account and
    container are then the first two path segments). The token of each account/container comes from
    ``{token_url}/{account}/{container}`` (JSON ``token`` and ``msft:expiry``), cached per process,
    refreshed ``refresh_margin`` seconds before it expires and when a read is refused; it is appended
    to the URL at read time only.

    Attributes:
        prefix: the hrefs it applies to.
        token_url: the token API.
        subscription_key: an API key sent as ``Ocp-Apim-Subscription-Key`` (optional).
        refresh_margin: seconds before expiry at which a token is fetched again.
    """

    prefix: str = "https://"
    token_url: str = PLANETARY_COMPUTER_TOKENS
    subscription_key: SecretLike = field(default=None)
    refresh_margin: float = DEFAULT_REFRESH_MARGIN

    def __post_init__(self) -> None:
        if not _norm(self.prefix).startswith("/vsicurl/"):
            raise InvalidInputError(
                f"PlanetaryComputerProfile prefix {self.prefix!r} is not an http(s):// URL"
            )
        object.__setattr__(self, "subscription_key", _secret(self.subscription_key))
        object.__setattr__(self, "refresh_margin", _refresh_margin(self.refresh_margin, self.prefix))

    def _where(self, href: str) -> tuple[str, str] | None:
        """(account, container) of an Azure Blob URL."""
        parts = urllib.parse.urlsplit(href)
        segments = [s for s in parts.path.split("/") if s]
        host = parts.hostname or ""
        if host.endswith(".blob.core.windows.net") and segments:
            return host.split(".", 1)[0], segments[0]
        if len(segments) >= 2:  # http://host:port/<account>/<container>/... (an emulator)
            return segments[0], segments[1]
        return None

    def _key(self, where: tuple[str, str]) -> Hashable:
        return ("sas", self.token_url, self.subscription_key, where)

    def _provider(self, where: tuple[str, str]) -> _SASTokenEndpoint:
        return _SASTokenEndpoint(f"{self.token_url.rstrip('/')}/{where[0]}/{where[1]}", self.subscription_key)

    def credentials_for(self, href: str) -> tuple[Hashable, Credentials] | None:
        """The cache key and current token of ``href``'s account/container (None: not a blob URL)."""
        where = self._where(href)
        if where is None:
            return None
        key = self._key(where)
        return key, current(key, self._provider(where), self.refresh_margin)

    def gdal_options(self) -> dict[str, str]:
        """No GDAL settings: the token goes into the URL."""
        return {}

    def sign(self, href: str) -> str:
        """``href`` with its container's current SAS token appended."""
        found = self.credentials_for(href)
        return href if found is None else _append_query(href, found[1].query)


# ------------------------------------------------------------------------------------ Azure and GCS


@dataclass(frozen=True, slots=True)
class AzureProfile:
    """Azure Blob Storage under ``prefix`` (``az://container``, ``abfs://``, ``/vsiaz/container``).

    One of: an account ``key``, a ``sas`` token, a ``connection_string``, or ``anonymous`` reads of a
    public container. ``endpoint`` points reads at another Blob endpoint (an emulator such as Azurite,
    ``http://127.0.0.1:10000/devstoreaccount1``): GDAL then gets a connection string with ``BlobEndpoint``.

    Attributes:
        prefix: the hrefs it applies to.
        account: the storage account (``AZURE_STORAGE_ACCOUNT``).
        key: the account key.
        sas: a SAS token (without ``?``).
        connection_string: a whole connection string.
        endpoint: the Blob endpoint URL, when not ``https://<account>.blob.core.windows.net``.
        anonymous: unsigned requests (``AZURE_NO_SIGN_REQUEST``).
    """

    prefix: str
    account: str | None = None
    key: SecretLike = field(default=None)
    sas: SecretLike = field(default=None)
    connection_string: SecretLike = field(default=None)
    endpoint: str | None = None
    anonymous: bool = False

    def __post_init__(self) -> None:
        if not _norm(self.prefix).startswith(("/vsiaz/", "/vsiadls/")):
            raise InvalidInputError(
                f"AzureProfile prefix {self.prefix!r} is not an az://, abfs:// or /vsiaz/ path"
            )
        given = [n for n in ("key", "sas", "connection_string") if getattr(self, n) is not None]
        if len(given) + self.anonymous > 1:
            raise InvalidInputError(
                f"AzureProfile {self.prefix}: give one of key, sas, connection_string, anonymous"
            )
        if (self.key is not None or self.sas is not None or self.anonymous) and not self.account:
            raise InvalidInputError(
                f"AzureProfile {self.prefix}: account= is needed with key, sas or anonymous"
            )
        for name in ("key", "sas", "connection_string"):
            object.__setattr__(self, name, _secret(getattr(self, name)))

    def gdal_options(self) -> dict[str, str]:
        """GDAL's ``AZURE_*`` settings."""
        conn = _reveal(self.connection_string)
        if conn:
            return {"AZURE_STORAGE_CONNECTION_STRING": conn}
        key, sas = _reveal(self.key), _reveal(self.sas)
        account = self.account or ""
        if self.endpoint:
            parts = [f"BlobEndpoint={self.endpoint.rstrip('/')}", f"AccountName={account}"]
            if key:
                parts.append(f"AccountKey={key}")
            if sas:
                parts.append(f"SharedAccessSignature={sas.lstrip('?')}")
            opts = {"AZURE_STORAGE_CONNECTION_STRING": ";".join(parts)}
            if self.anonymous:
                opts["AZURE_NO_SIGN_REQUEST"] = "YES"
            return opts
        opts = {"AZURE_STORAGE_ACCOUNT": account}
        if key:
            opts["AZURE_STORAGE_ACCESS_KEY"] = key
        if sas:
            opts["AZURE_STORAGE_SAS_TOKEN"] = sas.lstrip("?")
        if self.anonymous:
            opts["AZURE_NO_SIGN_REQUEST"] = "YES"
        return opts


@dataclass(frozen=True, slots=True)
class GCSProfile:
    """Google Cloud Storage under ``prefix`` (``gs://bucket``, ``/vsigs/bucket``).

    One of: a service-account JSON file (``service_account``), HMAC keys (``hmac_key_id`` and
    ``hmac_secret``), or ``anonymous`` reads of a public bucket.

    Attributes:
        prefix: the hrefs it applies to.
        service_account: path to the service account's JSON key (``GOOGLE_APPLICATION_CREDENTIALS``).
        hmac_key_id: an HMAC access key id (``GS_ACCESS_KEY_ID``).
        hmac_secret: its secret (``GS_SECRET_ACCESS_KEY``).
        anonymous: unsigned requests (``GS_NO_SIGN_REQUEST``).
        project: the project billed (``GS_USER_PROJECT``), for requester-pays buckets.
    """

    prefix: str
    service_account: str | os.PathLike[str] | None = None
    hmac_key_id: str | None = None
    hmac_secret: SecretLike = field(default=None)
    anonymous: bool = False
    project: str | None = None

    def __post_init__(self) -> None:
        if not _norm(self.prefix).startswith("/vsigs/"):
            raise InvalidInputError(f"GCSProfile prefix {self.prefix!r} is not a gs:// or /vsigs/ path")
        if bool(self.hmac_key_id) != (self.hmac_secret is not None):
            raise InvalidInputError(f"GCSProfile {self.prefix}: give both hmac_key_id and hmac_secret")
        kinds = (self.service_account is not None) + bool(self.hmac_key_id) + self.anonymous
        if kinds > 1:
            raise InvalidInputError(
                f"GCSProfile {self.prefix}: give one of service_account, HMAC keys, anonymous"
            )
        object.__setattr__(self, "hmac_secret", _secret(self.hmac_secret))

    def gdal_options(self) -> dict[str, str]:
        """GDAL's ``GS_*`` / ``GOOGLE_APPLICATION_CREDENTIALS`` settings."""
        opts: dict[str, str] = {}
        if self.anonymous:
            opts["GS_NO_SIGN_REQUEST"] = "YES"
        else:
            opts["GS_NO_SIGN_REQUEST"] = "NO"
        if self.service_account is not None:
            opts["GOOGLE_APPLICATION_CREDENTIALS"] = os.fspath(self.service_account)
        if self.hmac_key_id:
            opts["GS_ACCESS_KEY_ID"] = self.hmac_key_id
            opts["GS_SECRET_ACCESS_KEY"] = _reveal(self.hmac_secret) or ""
        if self.project:
            opts["GS_USER_PROJECT"] = self.project
        return opts


# ------------------------------------------------------------------------------------ NASA Earthdata

DAACS: Mapping[str, Mapping[str, Any]] = {
    # The s3credentials endpoints are earthaccess's (nsidc/earthaccess, earthaccess/daac.py, the
    # "s3-credentials" of each DAAC in DAACS, those with cloud providers); the HTTPS host is the
    # endpoint's. The buckets are the protected buckets of NASA Cumulus tables kept in public code
    # (a `_s3_buckets` table beside the same endpoints), with the two public buckets LP DAAC and
    # PO.DAAC document; DAACs whose buckets are not listed take `buckets=`.
    "NSIDC": {
        "s3credentials": "https://data.nsidc.earthdatacloud.nasa.gov/s3credentials",
        "buckets": ("nsidc-cumulus-prod-protected",),
    },
    "GHRCDAAC": {
        "s3credentials": "https://data.ghrc.earthdata.nasa.gov/s3credentials",
        "buckets": ("ghrc-cumulus-dev",),
    },
    "PODAAC": {
        "s3credentials": "https://archive.podaac.earthdata.nasa.gov/s3credentials",
        "buckets": ("podaac-ops-cumulus-protected", "podaac-ops-cumulus-public"),
    },
    "ASF": {"s3credentials": "https://sentinel1.asf.alaska.edu/s3credentials", "buckets": ()},
    "ORNLDAAC": {
        "s3credentials": "https://data.ornldaac.earthdata.nasa.gov/s3credentials",
        "buckets": ("ornl-cumulus-prod-protected",),
    },
    "LPDAAC": {
        "s3credentials": "https://data.lpdaac.earthdatacloud.nasa.gov/s3credentials",
        "buckets": ("lp-prod-protected", "lp-prod-public"),
    },
    "GES_DISC": {
        "s3credentials": "https://data.gesdisc.earthdata.nasa.gov/s3credentials",
        "buckets": ("gesdisc-cumulus-prod-protected",),
    },
    "LAADS": {"s3credentials": "https://data.laadsdaac.earthdatacloud.nasa.gov/s3credentials", "buckets": ()},
}
"""NASA DAACs with cloud-hosted data: their ``s3credentials`` endpoint and S3 buckets (the endpoint's
host serves the same files over HTTPS)."""

_REGION_HINT = (
    "NASA's buckets are read directly only from AWS us-west-2; outside it use the HTTPS profile: "
    "mosaic.auth.earthdata({which!r}, direct=False), with the https:// hrefs of the same files"
)


def earthdata(
    daac_or_bucket: str,
    *,
    direct: bool = True,
    token: SecretLike = None,
    buckets: tuple[str, ...] | list[str] | None = None,
    refresh_margin: float = DEFAULT_REFRESH_MARGIN,
) -> list[Any]:
    """The profiles that read one NASA DAAC's data, by its name (``"LPDAAC"``) or one of its buckets.

    ``direct=True`` (inside AWS us-west-2): a :class:`TemporaryS3Profile` per bucket, sharing the DAAC's
    ``s3credentials`` endpoint (one fetch per process and expiry; ``buckets`` overrides the table's).
    ``direct=False`` (anywhere): an :class:`~mosaic.auth.EarthdataProfile` for the DAAC's HTTPS host
    with a bearer token. When a direct read is refused even with fresh keys, the error says to use
    ``direct=False`` outside the region.

    Raises:
        InvalidInputError: an unknown DAAC or bucket (the message lists the known DAACs), or a DAAC
            whose buckets the table does not list, without ``buckets=``.
    """
    from mosaic.auth import EarthdataProfile

    name = daac_or_bucket.removeprefix("s3://").split("/", 1)[0]
    daac = DAACS.get(name.upper())
    bucket = None
    if daac is None:
        for entry in DAACS.values():
            if name in entry["buckets"]:
                daac, bucket = entry, name
                break
    if daac is None:
        raise InvalidInputError(
            f"{daac_or_bucket!r} is no DAAC or bucket mosaic knows ({', '.join(DAACS)}); "
            "build a TemporaryS3Profile with the DAAC's s3credentials URL"
        )
    endpoint = str(daac["s3credentials"])
    if not direct:
        parts = urllib.parse.urlsplit(endpoint)
        return [EarthdataProfile(f"{parts.scheme}://{parts.netloc}", token=token)]
    chosen = tuple(buckets) if buckets else (bucket,) if bucket else tuple(daac["buckets"])
    if not chosen:
        raise InvalidInputError(f"no S3 bucket of {daac_or_bucket!r} is known: give buckets=[...]")
    hint = _REGION_HINT.format(which=daac_or_bucket)
    return [
        TemporaryS3Profile(
            f"s3://{b}",
            endpoint,
            token=token,
            region="us-west-2",
            refresh_margin=refresh_margin,
            hint=hint,
        )
        for b in chosen
    ]
