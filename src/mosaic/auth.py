"""Credentials for remote reads: profiles matched by href prefix, turned into GDAL settings per read.

A profile says which hrefs it is for (``prefix``: a bucket, a host, a path under either) and how to
authenticate there. At read time the reader finds the profile with the longest matching prefix and
enters its GDAL settings (thread-local, for that read only), so several profiles work in one load,
e.g. two buckets with different keys.

Secrets are :class:`Secret` values: their ``repr``/``str`` never show them, so they stay out of logs,
error messages, plan output and dask's task reprs. ``Secret.from_env("NAME")`` keeps only the name of
an environment variable, read where the pixels are read (each dask worker's own environment), so the
secret itself never enters a dask graph; a literal ``Secret("...")`` travels pickled (not as text) in
the graph sent to ``dask.distributed`` workers. Credentials are never written to exported files.

HTTP headers set here follow curl's rule: an ``Authorization`` header is not sent on to another host
when a server redirects there (curl >= 7.58, which GDAL uses).
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from mosaic.errors import AuthenticationError, InvalidInputError
from mosaic.io.paths import gdal_path, secrets_in

__all__ = [
    "DAACS",
    "Access",
    "AzureProfile",
    "Credentials",
    "EarthdataProfile",
    "GCSProfile",
    "HTTPProfile",
    "PlanetaryComputerProfile",
    "Profile",
    "RefreshingProfile",
    "S3Profile",
    "Secret",
    "Signer",
    "TemporaryS3Profile",
    "access_for",
    "earthdata",
    "earthdata_token",
    "find_profile",
    "gdal_options_for",
    "hide_secrets",
    "refresh_refused",
    "reveal_options",
    "superseded",
]


class Secret:
    """A credential that never shows itself; :meth:`reveal` gives the value where it is used.

    Args:
        value: the secret itself (travels pickled to dask workers).
        env: instead, the name of an environment variable read at :meth:`reveal` time, in the process
            that reads the pixels.
    """

    __slots__ = ("_env", "_value")

    def __init__(self, value: str | None = None, *, env: str | None = None):
        if (value is None) == (env is None):
            raise InvalidInputError("a Secret takes either a value or env=, the name of a variable")
        self._value = value
        self._env = env

    @classmethod
    def from_env(cls, name: str) -> Secret:
        """A secret read from environment variable ``name`` where it is used."""
        return cls(env=name)

    def reveal(self) -> str:
        """The secret's value.

        Raises:
            InvalidInputError: the environment variable it names is not set here.
        """
        if self._value is not None:
            return self._value
        name = str(self._env)  # set when there is no value (checked in __init__)
        value = os.environ.get(name)
        if value is None:
            raise InvalidInputError(f"environment variable {name} (a credential) is not set")
        return value

    def __repr__(self) -> str:
        return f"Secret(env={self._env!r})" if self._env else "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and (self._value, self._env) == (other._value, other._env)

    def __hash__(self) -> int:
        return hash((Secret, self._value, self._env))

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_secret, (self._value, self._env))


def _rebuild_secret(value: str | None, env: str | None) -> Secret:
    return Secret(value, env=env)


SecretLike = Secret | str | None


def _reveal(value: SecretLike) -> str | None:
    if value is None:
        return None
    return value.reveal() if isinstance(value, Secret) else value


def _secret(value: SecretLike) -> Secret | None:
    """Plain strings given as secrets are wrapped so that no repr shows them."""
    return Secret(value) if isinstance(value, str) else value


class Profile(Protocol):
    """What the reader needs of a credential profile."""

    @property
    def prefix(self) -> str:
        """The hrefs it applies to (a URL, ``s3://bucket/path``, or a ``/vsi`` path)."""
        ...

    def gdal_options(self) -> dict[str, str]:
        """The GDAL configuration options that authenticate a read under ``prefix``."""
        ...


def _norm(prefix: str) -> str:
    return gdal_path(prefix) if "://" in prefix or prefix.startswith("/vsi") else prefix


def _matches(prefix: str, path: str) -> bool:
    """Whether GDAL path ``path`` is under ``prefix`` (a whole path segment: bucket-a is not bucket-ab)."""
    base = _norm(prefix)
    if base.endswith("/"):
        return path.startswith(base)
    return path == base or path.startswith(base + "/") or path.startswith(base + "?")


@dataclass(frozen=True, slots=True)
class S3Profile:
    """S3 (or an S3-compatible store) under ``prefix``, e.g. ``s3://bucket-a`` or ``s3://b/some/path``.

    Attributes:
        prefix: the hrefs it applies to.
        access_key_id: the key id (``AWS_ACCESS_KEY_ID``).
        secret_access_key: the secret key.
        session_token: a temporary session token, where the keys are temporary.
        region: the bucket's region (``AWS_REGION``).
        endpoint: an S3-compatible endpoint, ``http://host:port`` or ``https://host`` (path-style
            addressing is then used).
        unsigned: anonymous, unsigned requests (public buckets); no keys then.
        requester_pays: the requester pays for the transfer (``AWS_REQUEST_PAYER=requester``).
    """

    prefix: str
    access_key_id: str | None = None
    secret_access_key: SecretLike = field(default=None)
    session_token: SecretLike = field(default=None)
    region: str | None = None
    endpoint: str | None = None
    unsigned: bool = False
    requester_pays: bool = False

    def __post_init__(self) -> None:
        if not _norm(self.prefix).startswith("/vsis3/"):
            raise InvalidInputError(f"S3Profile prefix {self.prefix!r} is not an s3:// or /vsis3/ path")
        if self.unsigned and (self.access_key_id or self.secret_access_key):
            raise InvalidInputError(f"S3Profile {self.prefix}: unsigned requests take no keys")
        if bool(self.access_key_id) != bool(self.secret_access_key):
            raise InvalidInputError(f"S3Profile {self.prefix}: give both access_key_id and secret_access_key")
        object.__setattr__(self, "secret_access_key", _secret(self.secret_access_key))
        object.__setattr__(self, "session_token", _secret(self.session_token))

    def gdal_options(self) -> dict[str, str]:
        """GDAL's ``AWS_*`` settings for this profile."""
        opts: dict[str, str] = {}
        if self.unsigned:
            opts["AWS_NO_SIGN_REQUEST"] = "YES"
        else:
            opts["AWS_NO_SIGN_REQUEST"] = "NO"
            key, secret = self.access_key_id, _reveal(self.secret_access_key)
            if key and secret:
                opts["AWS_ACCESS_KEY_ID"], opts["AWS_SECRET_ACCESS_KEY"] = key, secret
            token = _reveal(self.session_token)
            if token:
                opts["AWS_SESSION_TOKEN"] = token
        if self.region:
            opts["AWS_REGION"] = self.region
        if self.endpoint:
            parts = urlsplit(self.endpoint if "://" in self.endpoint else f"https://{self.endpoint}")
            opts["AWS_S3_ENDPOINT"] = parts.netloc + parts.path.rstrip("/")
            opts["AWS_HTTPS"] = "NO" if parts.scheme == "http" else "YES"
            opts["AWS_VIRTUAL_HOSTING"] = "FALSE"
        if self.requester_pays:
            opts["AWS_REQUEST_PAYER"] = "requester"
        return opts


@dataclass(frozen=True, slots=True)
class HTTPProfile:
    """HTTP(S) under ``prefix`` (``https://host[/path]``): a bearer token, basic auth, or ``.netrc``.

    Attributes:
        prefix: the URLs it applies to.
        bearer: a token sent as ``Authorization: Bearer <token>``.
        username: for basic auth, with ``password``.
        password: for basic auth.
        netrc: read user names and passwords per host from this ``.netrc`` file (True: ``~/.netrc``).
    """

    prefix: str
    bearer: SecretLike = field(default=None)
    username: str | None = None
    password: SecretLike = field(default=None)
    netrc: bool | str | os.PathLike[str] = False

    def __post_init__(self) -> None:
        if not _norm(self.prefix).startswith("/vsicurl/"):
            raise InvalidInputError(f"HTTPProfile prefix {self.prefix!r} is not an http(s):// URL")
        if self.bearer is not None and self.username is not None:
            raise InvalidInputError(f"HTTPProfile {self.prefix}: give a bearer token or a user, not both")
        if (self.username is None) != (self.password is None):
            raise InvalidInputError(f"HTTPProfile {self.prefix}: basic auth needs username and password")
        object.__setattr__(self, "bearer", _secret(self.bearer))
        object.__setattr__(self, "password", _secret(self.password))

    def gdal_options(self) -> dict[str, str]:
        """GDAL's ``GDAL_HTTP_*`` settings for this profile."""
        opts: dict[str, str] = {}
        token = _reveal(self.bearer)
        if token:
            opts["GDAL_HTTP_HEADERS"] = f"Authorization: Bearer {token}"
        if self.username is not None:
            opts["GDAL_HTTP_AUTH"] = "BASIC"
            opts["GDAL_HTTP_USERPWD"] = f"{self.username}:{_reveal(self.password)}"
        if self.netrc:
            opts["GDAL_HTTP_NETRC"] = "YES"
            if not isinstance(self.netrc, bool):
                opts["GDAL_HTTP_NETRC_FILE"] = os.fspath(self.netrc)
        return opts


@dataclass(frozen=True, slots=True)
class EarthdataProfile:
    """NASA Earthdata Login style access under ``prefix``: a token, else a login host's user/password.

    The token comes from ``token`` or ``$EARTHDATA_TOKEN``; else ``$EARTHDATA_USERNAME`` and
    ``$EARTHDATA_PASSWORD`` (handed to GDAL as a ``.netrc`` holding the login host only, in memory),
    else the ``.netrc`` file (``netrc``, default ``~/.netrc``), whose entry for ``login_host`` curl uses
    when the data host redirects there. The data host then sets a session cookie, kept in a cookie
    jar so that the login happens once per process, not once per request.

    The password never reaches a disk where the system has anonymous memory files (Linux's
    ``memfd_create``): GDAL reads the ``.netrc`` from ``/proc/self/fd/N``, which dies with the process.
    Elsewhere it is a 0600 file in this process's private (0700) session folder; that folder (and the
    cookie jar in it) is removed at exit and, for a password file, on SIGTERM; after a SIGKILL the
    next process that opens a session removes the folders of processes that are gone.

    Attributes:
        prefix: the data URLs it applies to.
        token: the bearer token (default: ``Secret.from_env("EARTHDATA_TOKEN")`` when that is set).
        login_host: the host that asks for the user name and password.
        netrc: the ``.netrc`` file with the login host's entry.
    """

    prefix: str
    token: SecretLike = field(default=None)
    login_host: str = "urs.earthdata.nasa.gov"
    netrc: str | os.PathLike[str] | None = None

    def __post_init__(self) -> None:
        if not _norm(self.prefix).startswith("/vsicurl/"):
            raise InvalidInputError(f"EarthdataProfile prefix {self.prefix!r} is not an http(s):// URL")
        object.__setattr__(self, "token", _secret(self.token))
        if self.token is None and not _memory_files():
            _clean_on_sigterm()  # here, as reads (and the password file) happen in other threads

    def gdal_options(self) -> dict[str, str]:
        """A bearer header, or netrc + cookie settings for the login redirect."""
        token = _reveal(self.token) or os.environ.get("EARTHDATA_TOKEN")
        if token:
            return {"GDAL_HTTP_HEADERS": f"Authorization: Bearer {token}"}
        jar = str(_session_file("cookies.txt"))
        opts = {"GDAL_HTTP_NETRC": "YES", "GDAL_HTTP_COOKIEFILE": jar, "GDAL_HTTP_COOKIEJAR": jar}
        user, password = os.environ.get("EARTHDATA_USERNAME"), os.environ.get("EARTHDATA_PASSWORD")
        if user and password:
            opts["GDAL_HTTP_NETRC_FILE"] = _private_netrc(self.login_host, user, password)
        elif self.netrc is not None:
            opts["GDAL_HTTP_NETRC_FILE"] = os.fspath(self.netrc)
        return opts


# ---------------------------------------------------------------------------------- login sessions

_SESSION_PREFIX = "mosaic-auth-"
"""Session folders are ``<tmp>/mosaic-auth-<pid>-<host>-<random>``: a leftover of a dead process of
this host is told by its pid (a temp folder shared between hosts keeps the others' folders)."""

_session_lock = threading.Lock()
_session: tuple[int, Path] | None = None  # (pid, folder): a forked child makes its own
_netrcs: dict[tuple[int, str], str] = {}  # (pid, netrc text) -> the path GDAL reads it from


def _session_file(name: str) -> Path:
    """A file in this process's private (0700) session folder, removed at exit."""
    global _session
    with _session_lock:
        if _session is None or _session[0] != os.getpid():
            _remove_leftovers()
            folder = Path(tempfile.mkdtemp(prefix=f"{_SESSION_PREFIX}{os.getpid()}-{_host()}-"))
            _session = (os.getpid(), folder)
            atexit.register(_remove_session, folder)
        return _session[1] / name


def _remove_session(folder: Path) -> None:
    if _session is not None and _session[1] == folder and _session[0] == os.getpid():
        shutil.rmtree(folder, ignore_errors=True)


def _remove_leftovers() -> None:
    """Remove the session folders (ours, by owner) of processes of this host that are gone (SIGKILL)."""
    root = Path(tempfile.gettempdir())
    for folder in root.glob(f"{_SESSION_PREFIX}*-*"):
        pid_text, _, rest = folder.name[len(_SESSION_PREFIX) :].partition("-")
        try:
            mine = not hasattr(os, "getuid") or folder.stat().st_uid == os.getuid()
            here = rest.startswith(f"{_host()}-")
            if not pid_text.isdigit() or not mine or not here or _alive(int(pid_text)):
                continue
        except OSError:
            continue
        shutil.rmtree(folder, ignore_errors=True)


def _host() -> str:
    """This host's name as it can stand in a folder name."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def _private_netrc(host: str, user: str, password: str) -> str:
    """A ``.netrc`` with one entry, for curl to answer ``host``'s login (and no other host): its path.

    In memory (a ``memfd``, read by GDAL through ``/proc/self/fd/N``) where the system has them; else
    a 0600 file in the session folder, removed on SIGTERM too.
    """
    text = f"machine {host} login {user} password {password}\n"
    key = (os.getpid(), text)
    with _session_lock:
        known = _netrcs.get(key)
    if known is not None:
        return known
    path = _memory_file(text)
    if path is None:
        file = _session_file(f"netrc-{host}")
        fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        _clean_on_sigterm()
        path = str(file)
    with _session_lock:
        return _netrcs.setdefault(key, path)


def _memory_files() -> bool:
    """Whether this system has anonymous memory files that GDAL can open by name (Linux)."""
    return hasattr(os, "memfd_create") and os.path.isdir("/proc/self/fd")


def _memory_file(text: str) -> str | None:
    """``text`` in an anonymous memory file, as a path this process can open; None where there are none."""
    if not _memory_files():
        return None
    try:
        fd = os.memfd_create("mosaic-netrc", os.MFD_CLOEXEC)
    except OSError:
        return None
    data = text.encode()
    while data:
        data = data[os.write(fd, data) :]
    return f"/proc/self/fd/{fd}"  # open for the process's life: GDAL opens it on every login


_sigterm_watched = False


def _clean_on_sigterm() -> None:
    """On SIGTERM, remove the session folder, then do what SIGTERM did before (main thread only).

    Only for a password written to a file: a Python handler runs between bytecodes of the main
    thread, so it can delay termination while that thread waits in C code.
    """
    global _sigterm_watched
    if _sigterm_watched or threading.current_thread() is not threading.main_thread():
        return
    previous = signal.getsignal(signal.SIGTERM)
    if previous is signal.SIG_IGN or previous is None:
        return
    _sigterm_watched = True

    def on_sigterm(signum: int, frame: Any) -> None:
        if _session is not None:
            _remove_session(_session[1])
        if callable(previous):
            previous(signum, frame)
            return
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_sigterm)


def as_profiles(auth: Profile | Sequence[Profile] | None) -> tuple[Profile, ...]:
    """``auth`` as a tuple of profiles (one profile, several, or None).

    Raises:
        InvalidInputError: an element is not a credential profile.
    """
    if auth is None:
        return ()
    profiles: tuple[Any, ...] = (auth,) if hasattr(auth, "gdal_options") else tuple(auth)
    for profile in profiles:
        if not hasattr(profile, "gdal_options") or not hasattr(profile, "prefix"):
            raise InvalidInputError(
                f"auth takes credential profiles (mosaic.auth.S3Profile, HTTPProfile, EarthdataProfile, "
                f"TemporaryS3Profile, AzureProfile, GCSProfile...), got {type(profile).__name__}"
            )
    return profiles


def with_signer(auth: Any, sign: Any) -> Any:
    """``auth`` with a :class:`Signer` for ``sign`` (a callable href -> signed href) added; ``auth`` if None.

    Raises:
        InvalidInputError: ``sign`` is not callable.
    """
    if sign is None:
        return auth
    from mosaic.io.providers import Signer

    signer = sign if isinstance(sign, Signer) else Signer(sign)
    return (*as_profiles(auth), signer)


def _signs_only(profile: Any) -> bool:
    return type(profile).__name__ == "Signer" and type(profile).__module__ == "mosaic.io.providers"


def find_profile(href: str, profiles: Iterable[Profile]) -> Profile | None:
    """The profile with the longest prefix that ``href`` falls under, or None (signers are not profiles)."""
    path = gdal_path(href)
    best: Profile | None = None
    for profile in profiles:
        if _signs_only(profile):
            continue
        if _matches(profile.prefix, path) and (best is None or len(profile.prefix) > len(best.prefix)):
            best = profile
    return best


def gdal_options_for(href: str, profiles: Sequence[Profile]) -> Mapping[str, str]:
    """The GDAL settings that authenticate a read of ``href`` (empty when no profile matches).

    Raises:
        AuthenticationError: the matching profile names a credential that is not available here.
    """
    profile = find_profile(href, profiles)
    if profile is None:
        return {}
    try:
        return profile.gdal_options()
    except InvalidInputError as exc:
        raise AuthenticationError(href, f"authentication: {exc} (profile for {profile.prefix})") from exc


@dataclass(frozen=True, slots=True, eq=False)
class Access:
    """How one read reaches an href: what GDAL opens, with which settings, from which credentials.

    The href is signed where a profile or a signer signs it; ``used`` names the refreshing credentials
    the settings came from (to refresh them after a refusal).

    Never stored, pickled or shown: it is made in the reading thread, for one read.
    """

    href: str
    options: Mapping[str, str]
    profile: Profile | None = None
    used: tuple[tuple[Hashable, Any], ...] = ()
    signers: int = 0

    def __repr__(self) -> str:
        from mosaic.io.paths import redact

        return f"Access({redact(self.href)!r}, options=[{', '.join(sorted(self.options))}])"


def access_for(href: str, profiles: Sequence[Profile]) -> Access:
    """How to read ``href``: the matching profile's settings, and the href signed.

    Credentials that are due are fetched (or refreshed) now; the href is signed by the matching profile
    and by the signers whose prefix it falls under.

    Raises:
        AuthenticationError: a credential is not available here, or a credentials endpoint refused.
    """
    profile = find_profile(href, profiles)
    used: list[tuple[Hashable, Any]] = []
    target = href
    options: Mapping[str, str] = {}
    if profile is not None:
        try:
            if hasattr(profile, "credentials_key") and hasattr(profile, "credentials"):
                used.append((profile.credentials_key, profile.credentials()))
            options = profile.gdal_options()
            sas = getattr(profile, "credentials_for", None)
            if sas is not None:
                found = sas(href)
                if found is not None:
                    used.append(found)
            sign = getattr(profile, "sign", None)
            if sign is not None:
                target = sign(href)
        except InvalidInputError as exc:
            raise AuthenticationError(href, f"authentication: {exc} (profile for {profile.prefix})") from exc
    signers = 0
    path = gdal_path(href)
    for signer in profiles:
        if _signs_only(signer):
            prefix = signer.prefix
            if not prefix or _matches(prefix, path):
                target = signer.sign(target)  # type: ignore[attr-defined]
                signers += 1
    return Access(target, options, profile, tuple(used), signers)


def superseded(access: Access) -> bool:
    """Whether credentials ``access`` used have been replaced since (another read was refused with them).

    A read that failed with such credentials is tried again with the current ones, whatever GDAL said:
    GDAL shares what it learnt of a URL between threads, so a read with credentials since revoked can
    fail with "Cannot read TIFF header" instead of the server's refusal.
    """
    from mosaic.io.credentials import replaced

    return any(replaced(key, used) for key, used in access.used)


def refresh_refused(access: Access) -> bool:
    """Mark the refreshing credentials of a refused read stale; whether a retry may help.

    The next :func:`access_for` then fetches anew, once however many reads were refused with them. A
    retry may help where there were refreshing credentials or a signer.
    """
    from mosaic.io.credentials import refused

    for key, used in access.used:
        refused(key, used)
    return bool(access.used) or access.signers > 0


_SECRET_OPTION = re.compile(
    r"SECRET|TOKEN|PASSWORD|USERPWD|_KEY$|HEADERS|BEARER|_SAS$|CREDENTIAL|COOKIE$|CONNECTION_STRING", re.I
)
"""GDAL configuration options whose values are credentials (or may carry one, as HTTP headers)."""


def hide_secrets(options: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    """GDAL options as sorted (KEY, value) pairs, credential values wrapped in :class:`Secret`.

    Credentials are the values of options named for them (``*SECRET*``, ``*TOKEN*``, ``*PASSWORD*``,
    ``GDAL_HTTP_USERPWD``, ``GDAL_HTTP_HEADERS``, ``GDAL_HTTP_COOKIE``, ``*_CONNECTION_STRING``...)
    and any value carrying a secret :func:`mosaic.io.paths.secrets_in` recognises (a proxy URL with a
    password).
    """
    hidden = []
    for key, value in options.items():
        name = str(key).upper()
        if isinstance(value, str) and (_SECRET_OPTION.search(name) or secrets_in(value)):
            value = Secret(value)
        hidden.append((name, value))
    return tuple(sorted(hidden, key=lambda kv: kv[0]))


def reveal_options(options: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """The options with every :class:`Secret` replaced by its value, to hand to GDAL."""
    pairs = options.items() if isinstance(options, Mapping) else options
    return {k: v.reveal() if isinstance(v, Secret) else v for k, v in pairs}


# the profiles of other concerns, public here (mosaic.io.providers imports this module's names first)
from mosaic.io.credentials import Credentials  # noqa: E402
from mosaic.io.providers import (  # noqa: E402
    DAACS,
    AzureProfile,
    GCSProfile,
    PlanetaryComputerProfile,
    RefreshingProfile,
    Signer,
    TemporaryS3Profile,
    earthdata,
    earthdata_token,
)
