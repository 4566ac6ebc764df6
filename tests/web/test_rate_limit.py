"""The per-client limit on consent flows: bounded memory, and the real client behind a trusted proxy."""

from __future__ import annotations

from unittest import mock

from aiohttp.test_utils import make_mocked_request

from web.rate_limit import ClientRateLimiter, client_address


def test_a_client_gets_its_burst_then_waits_for_the_refill() -> None:
    now = [0.0]
    limiter = ClientRateLimiter(burst=3, per_minute=6, clock=lambda: now[0])
    assert [limiter.retry_after("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert limiter.retry_after("a") == 10.0  # one token every 10 s
    assert limiter.retry_after("b") == 0.0  # another client is not affected
    now[0] += 10.0
    assert limiter.retry_after("a") == 0.0


def test_memory_stays_bounded_under_a_flood_of_addresses() -> None:
    limiter = ClientRateLimiter(max_clients=100)
    for index in range(10_000):
        limiter.retry_after(f"10.0.{index // 256}.{index % 256}")
    assert limiter.tracked_clients() == 100


def test_behind_a_trusted_proxy_the_client_is_the_proxys_own_entry() -> None:
    forwarded = {"X-Forwarded-For": "6.6.6.6, 203.0.113.7"}  # the first entry is whatever the client sent
    behind = make_mocked_request("GET", "/link", headers=forwarded, transport=_transport("127.0.0.1"))
    assert client_address(behind, {"127.0.0.1"}) == "203.0.113.7"
    assert client_address(behind, set()) == "127.0.0.1"  # an untrusted peer's header is ignored


def _transport(peer: str) -> mock.Mock:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda name, default=None: (
        (peer, 4242) if name == "peername" else default
    )
    return transport
