"""The egress guard (likeness.net.egress): which addresses caller-named URLs may reach, that a request goes to
the very address that was checked, and the limits of fetches and posts. Local HTTP servers on 127.0.0.1 only."""

from __future__ import annotations

import ipaddress
import time

import pytest
from http_receiver import Receiver, Reply

from likeness.errors import InvalidArgument
from likeness.net import egress
from likeness.net.egress import (
    EgressFailed,
    EgressPolicy,
    EgressRefused,
    EgressTimeout,
    EgressTooLarge,
    EgressUnresolved,
    parse_cidrs,
    refusal_reason,
)

LOCAL = parse_cidrs("127.0.0.1/32", field="test")


def answer(status: int, body: bytes = b"", headers: dict[str, str] | None = None, delay: float = 0.0) -> Receiver:
    return Receiver(lambda request: Reply(status, body, headers or {}, delay))


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("10.1.2.3", "private"),
        ("172.16.0.1", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "CGNAT"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("fd00::1", "private"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("0.0.0.0", "unspecified"),
        ("::", "unspecified"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped
        ("64:ff9b::a00:1", "private"),  # NAT64 of 10.0.0.1
        ("2002:a9fe:a9fe::1", "link-local"),  # 6to4 of 169.254.169.254
        ("192.0.2.1", "private"),  # documentation range
        ("240.0.0.1", "reserved"),
    ],
)
def test_addresses_inside_clusters_and_hosts_are_refused(address: str, reason: str) -> None:
    assert reason in refusal_reason(ipaddress.ip_address(address))


def test_public_addresses_pass_and_the_operator_lists_decide_the_rest() -> None:
    for address in ("8.8.8.8", "1.1.1.1", "2606:4700::1111"):
        assert refusal_reason(ipaddress.ip_address(address)) == ""
    policy = EgressPolicy(
        allow=parse_cidrs("10.0.0.0/8, 127.0.0.1", field="allow"),
        deny=parse_cidrs("10.9.0.0/16 203.0.113.0/24", field="deny"),
        allow_setting="--webhook-allow-cidrs",
        deny_setting="--egress-deny-cidrs",
    )
    assert policy.address_refusal("10.1.2.3") == "" and policy.address_refusal("127.0.0.1") == ""
    assert "--egress-deny-cidrs" in policy.address_refusal("10.9.1.1")  # deny wins over allow
    assert "--egress-deny-cidrs" in policy.address_refusal("203.0.113.7")  # and refuses public ranges too
    assert "--webhook-allow-cidrs" in policy.address_refusal("127.0.0.2")
    with pytest.raises(InvalidArgument) as caught:
        parse_cidrs("10.0.0.0/8, nonsense", field="webhook_allow_cidrs")
    assert caught.value.field == "webhook_allow_cidrs" and "'nonsense'" in caught.value.message


def test_urls_are_checked_for_scheme_form_and_every_resolved_address() -> None:
    answers = {"public.example": ["93.184.216.34"], "mixed.example": ["93.184.216.34", "10.0.0.7"]}

    def resolver(host: str, port: int) -> list[str]:
        if host not in answers:
            raise EgressUnresolved(f"host {host!r} does not resolve")
        return answers[host]

    policy = EgressPolicy(resolver=resolver, allow_setting="--webhook-allow-cidrs")
    target = policy.check_url("https://public.example/hooks?x=1")
    assert (target.host, target.port, target.path, target.addresses) == (
        "public.example",
        443,
        "/hooks?x=1",
        ("93.184.216.34",),
    )
    refused = {
        "ftp://public.example/": "https://",
        "public.example/hook": "https://",
        "https:///nohost": "no host",
        "https://user:pw@public.example/": "user name or password",
        "https://mixed.example/": "resolves to a private address",
        "http://169.254.169.254/latest/meta-data/": "link-local",
        "https://[::1]:8443/": "loopback",
        "https://public.example:99999/": "not a valid URL",
        "https://public.example/" + "a" * 3000: "longer than",
    }
    for url, why in refused.items():
        with pytest.raises(EgressRefused, match=why.replace("?", r"\?")):
            policy.check_url(url)
    with pytest.raises(EgressUnresolved, match="does not resolve"):
        policy.check_url("https://nowhere.invalid/")
    with pytest.raises(EgressRefused, match="https://"):
        EgressPolicy(resolver=resolver, plain_http=False).check_url("http://public.example/photo.png")


def test_the_request_goes_to_the_checked_address_with_the_name_in_the_host_header() -> None:
    calls: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        # A rebinding resolver: the first answer is the checked one; any later one would point elsewhere.
        calls.append(host)
        return ["127.0.0.1"] if len(calls) == 1 else ["10.0.0.1"]

    with answer(204) as receiver:
        policy = EgressPolicy(allow=LOCAL, resolver=rebinding)
        response = egress.post(policy, f"http://receiver.test:{receiver.port}/hook", b"{}", {"x-test": "1"}, timeout=5)
    assert response.status == 204 and calls == ["receiver.test"]
    seen = receiver.requests[0].headers
    assert seen["host"] == f"receiver.test:{receiver.port}" and seen["x-test"] == "1"


def test_fetch_limits_size_and_time_and_rechecks_redirects() -> None:
    policy = EgressPolicy(allow=LOCAL, plain_http=False)
    with answer(200, b"x" * 5000, {"content-type": "image/png"}) as receiver:
        url = f"http://127.0.0.1:{receiver.port}/a.png"
        assert egress.fetch(policy, url, max_bytes=5000, timeout=5).body == b"x" * 5000
        with pytest.raises(EgressTooLarge, match="over the"):
            egress.fetch(policy, url, max_bytes=4096, timeout=5)
    with answer(200, b"late", delay=2.0) as receiver:
        started = time.monotonic()
        with pytest.raises(EgressTimeout, match=r"0\.5 s"):
            egress.fetch(policy, f"http://127.0.0.1:{receiver.port}/slow.png", max_bytes=100, timeout=0.5)
        assert time.monotonic() - started < 1.5
    with answer(302, headers={"location": "http://10.0.0.1/internal.png"}) as receiver:
        with pytest.raises(EgressRefused, match=r"10\.0\.0\.1"):
            egress.fetch(policy, f"http://127.0.0.1:{receiver.port}/a.png", max_bytes=100, timeout=5)
        # A POST never follows a redirect: the receiver's 302 is its answer.
        assert egress.post(policy, f"http://127.0.0.1:{receiver.port}/hook", b"{}", {}, timeout=5).status == 302
    with answer(302, headers={"location": "/again"}) as receiver, pytest.raises(EgressFailed, match="more than 3"):
        egress.fetch(policy, f"http://127.0.0.1:{receiver.port}/loop", max_bytes=100, timeout=5)


def test_a_closed_port_is_a_failure_not_a_hang() -> None:
    with answer(200) as receiver:
        pass  # closed again: nothing listens on the port now
    with pytest.raises(EgressFailed, match="cannot connect"):
        egress.post(EgressPolicy(allow=LOCAL), f"http://127.0.0.1:{receiver.port}/hook", b"{}", {}, timeout=5)
