"""Parsing and checking of ``[coordination] url`` Redis URLs, without importing redis-py (config checks use it).

Forms (see README, Replicas):

* ``redis://[[user]:password@]host[:6379][/db][?option=value...]``, ``rediss://`` (TLS), ``unix:///path.sock``
  are handed to redis-py's ``from_url`` once their options are checked;
* ``redis+sentinel://[[user]:password@]host[:26379][,host[:26379]...]/service[/db][?option=value...]`` and
  ``rediss+sentinel://`` (TLS to the sentinels and to the master) ask the sentinels for the master of ``service``,
  and follow it when it fails over. ``user`` and ``password`` are those of the master (and its replicas);
  ``sentinel_username`` and ``sentinel_password`` options, those of the sentinels when they require a password.

Options are checked here (a misspelt one would otherwise reach redis-py as an unexpected keyword argument at the
first connection): ``db``, ``client_name``, ``health_check_interval``, ``protocol``, ``socket_keepalive``,
``username`` and ``password`` (not with Sentinel: put them before the host) and, for TLS only,
``ssl_ca_certs``, ``ssl_ca_path``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_password``, ``ssl_cert_reqs``
(``required``, ``optional``, ``none``), ``ssl_check_hostname`` and ``ssl_ciphers``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

from pamd.config import redact

PLAIN_SCHEMES = ("redis", "rediss", "unix")
SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
SCHEMES = PLAIN_SCHEMES + SENTINEL_SCHEMES
SENTINEL_PORT = 26379

TLS_OPTIONS = frozenset({"ssl_ca_certs", "ssl_ca_path", "ssl_certfile", "ssl_keyfile", "ssl_password",
                         "ssl_cert_reqs", "ssl_check_hostname", "ssl_ciphers"})
COMMON_OPTIONS = frozenset({"db", "client_name", "health_check_interval", "protocol", "socket_keepalive"})
PLAIN_OPTIONS = frozenset({"username", "password"})  # redis-py's way to give them with unix://
SENTINEL_OPTIONS = frozenset({"sentinel_username", "sentinel_password"})
_INT_OPTIONS = frozenset({"db", "health_check_interval", "protocol"})
_BOOL_OPTIONS = frozenset({"ssl_check_hostname", "socket_keepalive"})
_BOOLS = {"1": True, "yes": True, "true": True, "0": False, "no": False, "false": False}  # as redis-py reads them
_CERT_REQS = ("required", "optional", "none")
_HOST = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[^:\[\]/,]+))(?::(?P<port>\d{1,5}))?$")


@dataclass(frozen=True)
class SentinelUrl:
    """A parsed ``redis+sentinel://`` or ``rediss+sentinel://`` URL."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    tls: bool = False
    options: dict[str, str] = field(default_factory=dict)
    """The query options other than ``db`` (checked: names and values are valid)."""


def redact_url(url: str) -> str:
    """``url`` with the password of its user info and any ``*password``/``*secret``/``*token`` option replaced
    by ``***``, for logs and messages."""
    redacted: str = redact(url, "url")
    return redacted


def url_scheme(url: str) -> str:
    """The lower-cased scheme of ``url`` (``""`` without ``://``)."""
    return url.split("://", 1)[0].lower() if "://" in url else ""


def check_redis_url(url: str) -> SentinelUrl | None:
    """Raise ValueError (one clear line, no password) if ``url`` is not a usable Redis URL; return the parsed
    Sentinel URL for the Sentinel forms, ``None`` for the others (which redis-py parses)."""
    scheme = url_scheme(url)
    if scheme in SENTINEL_SCHEMES:
        return parse_sentinel_url(url)
    if scheme not in PLAIN_SCHEMES:
        raise ValueError(f"{redact_url(url)}: unsupported Redis URL scheme {scheme!r} (use one of "
                         f"{', '.join(s + '://' for s in SCHEMES)})")
    parts = urlsplit(url)
    if scheme != "unix" and not parts.hostname:
        raise ValueError(f"{redact_url(url)}: no host (expected {scheme}://[user:password@]host[:port][/db])")
    try:
        port = parts.port
    except ValueError:
        port = -1
    if port is not None and not 0 < port < 65536:
        raise ValueError(f"{redact_url(url)}: bad port")
    if scheme != "unix" and parts.path.strip("/") and not parts.path.strip("/").isdigit():
        raise ValueError(f"{redact_url(url)}: the path must be a database number, got {parts.path!r}")
    check_options(url, parts.query, tls=scheme == "rediss", sentinel=False)
    return None


def parse_sentinel_url(url: str) -> SentinelUrl:
    """Parse ``redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?options]`` (and
    ``rediss+sentinel://``); raise ValueError with a clear, password-free message when it is not one."""
    safe = redact_url(url)
    usage = "expected redis+sentinel://[user:password@]host[:26379][,host[:26379]...]/service[/db]"
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SENTINEL_SCHEMES:
        raise ValueError(f"{safe}: not a Sentinel URL ({usage})")
    rest, _, query = rest.partition("?")
    rest = rest.partition("#")[0]
    netloc, slash, path = rest.partition("/")
    userinfo, at, hosts_text = netloc.rpartition("@")
    if not at:
        hosts_text, userinfo = netloc, ""
    username = password = None
    if at:
        user_text, colon, password_text = userinfo.partition(":")
        username = unquote(user_text) or None
        password = unquote(password_text) if colon and password_text else None
    if not hosts_text:
        raise ValueError(f"{safe}: no sentinel address ({usage})")
    sentinels: list[tuple[str, int]] = []
    for host_text in hosts_text.split(","):
        match = _HOST.match(host_text.strip())
        port = int(match["port"]) if match and match["port"] else SENTINEL_PORT
        if not match or not 0 < port < 65536:
            raise ValueError(f"{safe}: bad sentinel address {host_text!r} (expected host[:port] or [ipv6][:port])")
        sentinels.append((match["v6"] or match["name"], port))
    segments = path.split("/") if slash else []
    service = unquote(segments[0]) if segments else ""
    if not service:
        raise ValueError(f"{safe}: no service name, the name the sentinels monitor the master under ({usage})")
    if len(segments) > 2 or (len(segments) == 2 and not segments[1].isdigit()):
        raise ValueError(f"{safe}: after the service name only a database number may follow ({usage})")
    options = check_options(url, query, tls=scheme.lower() == "rediss+sentinel", sentinel=True)
    db = int(segments[1]) if len(segments) == 2 else 0
    if "db" in options:
        db = int(options.pop("db"))
    return SentinelUrl(tuple(sentinels), service, db, username, password, scheme.lower() == "rediss+sentinel",
                       options)


def check_options(url: str, query: str, *, tls: bool, sentinel: bool) -> dict[str, str]:
    """The query options of ``url`` as a dict; ValueError for an unknown option, a TLS option without TLS, a
    repeated one or a bad value."""
    safe = redact_url(url)
    known = COMMON_OPTIONS | TLS_OPTIONS | (SENTINEL_OPTIONS if sentinel else PLAIN_OPTIONS)
    options: dict[str, str] = {}
    for name, values in parse_qs(query, keep_blank_values=True, strict_parsing=False).items():
        if name not in known:
            raise ValueError(f"{safe}: unknown option {name!r} (known: {', '.join(sorted(known))})")
        if name in TLS_OPTIONS and not tls:
            raise ValueError(f"{safe}: {name} needs TLS: use the rediss{'+sentinel' if sentinel else ''}:// scheme")
        if len(values) > 1:
            raise ValueError(f"{safe}: option {name!r} given {len(values)} times")
        value = values[0]
        if name in _INT_OPTIONS and not value.isdigit():
            raise ValueError(f"{safe}: option {name!r} must be a non-negative integer, got {value!r}")
        if name == "ssl_cert_reqs" and value not in _CERT_REQS:
            raise ValueError(f"{safe}: ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}, got {value!r}")
        if name in _BOOL_OPTIONS and value.lower() not in _BOOLS:
            raise ValueError(f"{safe}: {name} must be true or false, got {value!r}")
        options[name] = value
    return options


def connection_options(options: dict[str, str]) -> dict[str, object]:
    """Checked query options as redis-py connection keyword arguments (integers and booleans converted)."""
    kwargs: dict[str, object] = {}
    for name, value in options.items():
        if name in SENTINEL_OPTIONS:
            continue
        if name in _INT_OPTIONS:
            kwargs[name] = int(value)
        elif name in _BOOL_OPTIONS:
            kwargs[name] = _BOOLS[value.lower()]
        else:
            kwargs[name] = value
    return kwargs
