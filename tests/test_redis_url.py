"""Redis URL forms of ``[coordination] url``: parsing, checking, redaction; nothing connects."""

from __future__ import annotations

from pathlib import Path

import pytest

from pamd.assemble import assemble
from pamd.config import ConfigError, redact
from pamd.coordination import open_coordinator
from pamd.coordination.redis_client import SentinelRedis, redis_client
from pamd.coordination.redis_url import SentinelUrl, check_redis_url, parse_sentinel_url, redact_url
from tests.conftest import write_config


def test_sentinel_url_with_several_sentinels_credentials_and_db() -> None:
    parsed = parse_sentinel_url("redis+sentinel://pamd:s%40cret@10.0.0.1,10.0.0.2:26380,[::1]:26381/pamdsvc/3")
    assert parsed == SentinelUrl(sentinels=(("10.0.0.1", 26379), ("10.0.0.2", 26380), ("::1", 26381)),
                                 service="pamdsvc", db=3, username="pamd", password="s@cret", tls=False)


def test_sentinel_url_defaults_options_and_tls() -> None:
    assert parse_sentinel_url("redis+sentinel://sentinel.internal/mymaster") == SentinelUrl(
        sentinels=(("sentinel.internal", 26379),), service="mymaster")
    parsed = parse_sentinel_url("rediss+sentinel://:pw@127.0.0.1:5000/svc?ssl_ca_certs=/etc/ca.pem"
                                "&sentinel_password=sp&db=2&ssl_check_hostname=false")
    assert parsed.tls and parsed.password == "pw" and parsed.username is None and parsed.db == 2
    assert parsed.options == {"ssl_ca_certs": "/etc/ca.pem", "sentinel_password": "sp", "ssl_check_hostname": "false"}


@pytest.mark.parametrize(("url", "problem"), [
    ("redis+sentinel://pamd:hunter2@/svc", "no sentinel address"),
    ("redis+sentinel://pamd:hunter2@h1:26379", "no service name"),
    ("redis+sentinel://pamd:hunter2@h1:26379/", "no service name"),
    ("redis+sentinel://pamd:hunter2@h1:26379/svc/zero", "only a database number"),
    ("redis+sentinel://pamd:hunter2@h1:26379/svc/0/x", "only a database number"),
    ("redis+sentinel://pamd:hunter2@h1:99999/svc", "bad sentinel address 'h1:99999'"),
    ("redis+sentinel://pamd:hunter2@h1,,h2/svc", "bad sentinel address ''"),
    ("redis+sentinel://pamd:hunter2@h1:port/svc", "bad sentinel address 'h1:port'"),
    ("redis+sentinel://pamd:hunter2@h1/svc?ssl_ca_certs=/ca.pem", "ssl_ca_certs needs TLS: use the rediss+sentinel"),
    ("redis+sentinel://pamd:hunter2@h1/svc?sentinel_pasword=x", "unknown option 'sentinel_pasword'"),
    ("rediss+sentinel://pamd:hunter2@h1/svc?ssl_cert_reqs=maybe", "ssl_cert_reqs must be one of"),
    ("redis+sentinel://pamd:hunter2@h1/svc?db=x", "'db' must be a non-negative integer"),
])
def test_bad_sentinel_urls_are_one_clear_line_without_the_password(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=r"redis[+]sentinel|rediss[+]sentinel") as caught:
        parse_sentinel_url(url)
    message = str(caught.value)
    assert problem in message and "hunter2" not in message and "pamd:***@" in message and "\n" not in message


@pytest.mark.parametrize(("url", "problem"), [
    ("redis://h:6379/0?ssl_ca_certs=/ca.pem", "ssl_ca_certs needs TLS: use the rediss:// scheme"),
    ("rediss://h:6379/0?ssl_ca_cert=/ca.pem", "unknown option 'ssl_ca_cert'"),
    ("rediss://h:6379/0?ssl_cert_reqs=Required", "ssl_cert_reqs must be one of required, optional, none"),
    ("rediss://h:6379/0?ssl_check_hostname=maybe", "ssl_check_hostname must be true or false"),
    ("redis://h:6379/zero", "the path must be a database number"),
    ("redis://:6379/0", "no host"),
    ("redis://h:70000/0", "bad port"),
    ("memcached://h:11211", "unsupported Redis URL scheme 'memcached'"),
])
def test_bad_plain_urls(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace("+", r"\+")):
        check_redis_url(url)


def test_good_plain_urls_pass_through() -> None:
    for url in ("redis://127.0.0.1:6379/0", "redis://:pw@h", "rediss://u:p@h:6380/1?ssl_ca_certs=/ca.pem&"
                "ssl_certfile=/c.pem&ssl_keyfile=/k.pem&ssl_cert_reqs=required&ssl_check_hostname=true",
                "unix:///run/redis.sock?db=2&password=x"):
        assert check_redis_url(url) is None


def test_redaction_hides_passwords_in_user_info_and_options() -> None:
    url = "rediss+sentinel://pamd:s3cret@h1,h2:26380/svc?ssl_password=kp&sentinel_password=sp&ssl_ca_certs=/ca.pem"
    assert redact_url(url) == ("rediss+sentinel://pamd:***@h1,h2:26380/svc?ssl_password=***&sentinel_password=***"
                               "&ssl_ca_certs=/ca.pem")
    assert redact({"coordination": {"url": "unix:///s.sock?password=x&db=1"}}) == {
        "coordination": {"url": "unix:///s.sock?password=***&db=1"}}


@pytest.mark.anyio
async def test_sentinel_client_is_built_without_connecting() -> None:
    client = redis_client("rediss+sentinel://u:p@127.0.0.1:9,127.0.0.1:10/svc/4?ssl_ca_certs=/ca.pem"
                          "&sentinel_password=sp", timeout=1.0, backoff_cap=0.1)
    assert isinstance(client, SentinelRedis) and client.sentinel_manager is not None
    kwargs = client.connection_pool.connection_kwargs
    assert (kwargs["db"], kwargs["username"], kwargs["password"], kwargs["ssl_ca_certs"]) == (4, "u", "p", "/ca.pem")
    assert kwargs["socket_timeout"] == 1.0
    sentinels = client.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [9, 10]
    assert sentinels[0].connection_pool.connection_kwargs["password"] == "sp"
    await client.aclose()


def test_open_coordinator_takes_sentinel_urls_and_rejects_bad_ones(tmp_path: Path) -> None:
    from pamd.coordination.redis import RedisCoordinator

    coordinator = open_coordinator("redis+sentinel://127.0.0.1:26379/svc", "p", str(tmp_path))
    assert isinstance(coordinator, RedisCoordinator)
    with pytest.raises(ValueError, match="no service name"):
        open_coordinator("redis+sentinel://127.0.0.1:26379", "p", str(tmp_path))
    with pytest.raises(ValueError, match=r"^not a URL") as caught:
        open_coordinator("pamd:hunter2@redis.internal:6379", "p", str(tmp_path))
    assert "hunter2" not in str(caught.value)


def test_a_bad_coordination_url_is_a_located_config_error(tmp_path: Path, clean_env: dict[str, str]) -> None:
    path = write_config(tmp_path, 8650, '[coordination]\nurl = "redis+sentinel://pamd:hunter2@h1:26379"\n')
    with pytest.raises(ConfigError) as caught:
        assemble(str(path), clean_env)
    message = str(caught.value)
    assert message.startswith(f"{path}:") and "coordination.url" in message and "no service name" in message
    assert "hunter2" not in message
