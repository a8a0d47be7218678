"""The SSRF guard: which URLs a rule may name, and which addresses a resolved name may reach."""

from __future__ import annotations

import ipaddress

import pytest
from tests.delivery.targets.support import StaticResolver

from stellwerk.delivery.targets import AddressPolicy, GuardedResolver, check_target_url
from stellwerk.delivery.targets.ssrf import UnsafeAddressError, address_refusal
from stellwerk.rules import UnsafeTargetError

REFUSED = [
    ("http://127.0.0.1/hook", "loopback"),
    ("http://127.9.9.9:8080/", "loopback"),
    ("http://10.1.2.3/", "private (RFC 1918)"),
    ("http://172.20.0.1/", "private (RFC 1918)"),
    ("http://192.168.0.10/", "private (RFC 1918)"),
    ("http://100.64.0.1/", "carrier-grade NAT"),
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://0.0.0.0:8080/", "unspecified"),
    ("http://224.0.0.1/", "multicast"),
    ("http://255.255.255.255/", "broadcast"),
    ("http://240.0.0.1/", "reserved"),
    ("http://[::1]/", "loopback"),
    ("http://[::]/", "unspecified"),
    ("http://[fe80::1]/", "link-local"),
    ("http://[fd00:ec2::254]/", "unique local (RFC 4193)"),
    ("http://[fc00::1]/", "unique local (RFC 4193)"),
    ("http://[ff02::1]/", "multicast"),
    ("http://[::ffff:127.0.0.1]/", "embeds 127.0.0.1, which is loopback"),
    ("http://[::ffff:169.254.169.254]/", "embeds 169.254.169.254, which is link-local"),
    ("http://[::ffff:a00:1]/", "embeds 10.0.0.1, which is private"),
    ("http://[64:ff9b::a9fe:a9fe]/", "embeds 169.254.169.254"),
    ("http://[2002:7f00:1::1]/", "embeds 127.0.0.1"),
    ("http://[2001:db8::1]/", "documentation"),
    ("http://localhost/", "loopback interface"),
    ("http://LOCALHOST.:9000/", "loopback interface"),
    ("http://api.localhost/", "loopback interface"),
    ("http://2130706433/", "not a canonical IP address"),
    ("http://0x7f.1/", "not a canonical IP address"),
    ("http://127.1/", "not a canonical IP address"),
    ("http://0177.0.0.1/", "not a canonical IP address"),
    ("ftp://example.com/", "scheme 'ftp' is not allowed"),
    ("file:///etc/passwd", "scheme 'file' is not allowed"),
    ("http://user:pass@example.com/", "credentials in the URL"),
    ("/relative/path", "not an absolute URL"),
]


@pytest.mark.parametrize(("url", "reason"), REFUSED)
def test_refused_at_save_time_with_the_reason(url: str, reason: str) -> None:
    with pytest.raises(UnsafeTargetError) as caught:
        check_target_url(url)
    assert caught.value.field == "url"
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/stellwerk",
        "http://93.184.215.14:8080/in",
        "https://[2606:4700:4700::1111]/",
        "https://[::ffff:93.184.215.14]/",
        "https://sub.example.org./path?q=1",
    ],
)
def test_public_urls_pass(url: str) -> None:
    check_target_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:8080/hook",
        "http://localhost/",
        "http://169.254.169.254/",
        "http://[::1]/",
        "http://10.0.0.5/",
    ],
)
def test_allow_private_lifts_the_address_checks(url: str) -> None:
    check_target_url(url, allow_private=True)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://127.0.0.1/", "scheme"),
        ("http://u:p@127.0.0.1/", "credentials"),
        ("http://2130706433/", "canonical"),
    ],
)
def test_allow_private_keeps_the_url_checks(url: str, reason: str) -> None:
    with pytest.raises(UnsafeTargetError, match=reason):
        check_target_url(url, allow_private=True)


def test_allowed_networks_open_only_what_they_list() -> None:
    check_target_url("http://10.1.2.3/", allowed_networks=["10.1.2.0/24"])
    with pytest.raises(UnsafeTargetError, match=r"10\.1\.3\.1 is private"):
        check_target_url("http://10.1.3.1/", allowed_networks=["10.1.2.0/24"])
    with pytest.raises(UnsafeTargetError) as caught:
        AddressPolicy.build(allowed_networks=["not-a-net"])
    assert caught.value.field == "allowed_networks"


def test_message_says_how_to_allow() -> None:
    with pytest.raises(UnsafeTargetError, match="--allow-private-targets"):
        check_target_url("http://169.254.169.254/")


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111", "2a00:1450:4001:80b::200e"],
)
def test_public_addresses_have_no_refusal(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


async def test_resolver_drops_refused_addresses_and_keeps_public_ones() -> None:
    inner = StaticResolver({"mixed.example": ["10.0.0.1", "93.184.215.14", "::1"]})
    resolver = GuardedResolver(AddressPolicy(), inner)
    answers = await resolver.resolve("mixed.example", 443)
    assert [answer["host"] for answer in answers] == ["93.184.215.14"]


async def test_resolver_refuses_a_name_with_only_private_addresses() -> None:
    inner = StaticResolver({"rebind.example": ["127.0.0.1", "169.254.169.254"]})
    resolver = GuardedResolver(AddressPolicy(), inner)
    with pytest.raises(UnsafeAddressError) as caught:
        await resolver.resolve("rebind.example", 80)
    message = str(caught.value)
    assert "127.0.0.1 (loopback)" in message
    assert "169.254.169.254 (link-local" in message


async def test_resolver_with_allow_private_passes_everything() -> None:
    inner = StaticResolver({"rebind.example": ["127.0.0.1"]})
    resolver = GuardedResolver(AddressPolicy(allow_private=True), inner)
    answers = await resolver.resolve("rebind.example", 80)
    assert [answer["host"] for answer in answers] == ["127.0.0.1"]


async def test_link_local_ipv6_with_zone_is_refused() -> None:
    inner = StaticResolver({"zoned.example": ["fe80::1%1"]})
    resolver = GuardedResolver(AddressPolicy(), inner)
    with pytest.raises(UnsafeAddressError, match="link-local"):
        await resolver.resolve("zoned.example", 80)


async def test_an_empty_answer_is_a_dns_failure_not_a_refusal() -> None:
    resolver = GuardedResolver(AddressPolicy(), StaticResolver({"empty.example": []}))
    with pytest.raises(OSError, match="no addresses") as caught:
        await resolver.resolve("empty.example", 80)
    assert not isinstance(caught.value, UnsafeAddressError)
