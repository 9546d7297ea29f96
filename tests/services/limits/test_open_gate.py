"""Seed 004's open mode (issue 19 point 2): which address a keyless call is counted under."""

from __future__ import annotations

import dataclasses

from services.config.schema import Config
from services.limits.open_gate import OpenGate


def gate(*trusted: str) -> OpenGate:
    return OpenGate(dataclasses.replace(Config(), open_mode=True, trusted_proxies=trusted), limiter=None)


def test_the_in_process_bridge_is_the_one_trusted_hop_by_default():
    g = gate()
    # The bridge appends the address it saw; a client's own X-Forwarded-For is not believed.
    assert g.client_ip("inprocess", {"x-forwarded-for": "198.51.100.7"}) == "198.51.100.7"
    assert g.client_ip("inprocess", {"x-forwarded-for": "6.6.6.6, 198.51.100.7"}) == "198.51.100.7"
    assert g.client_ip("inprocess", {}) == "unknown"


def test_trusted_proxies_let_forwarded_addresses_through_right_to_left():
    g = gate("10.0.0.0/8", "127.0.0.1")
    assert g.client_ip("inprocess", {"x-forwarded-for": "203.0.113.9, 10.1.2.3, 127.0.0.1"}) == "203.0.113.9"
    # A spoofed left-most entry stays unbelieved: the right-most untrusted hop is the client.
    assert g.client_ip("inprocess", {"x-forwarded-for": "1.1.1.1, 203.0.113.9, 10.1.2.3, 127.0.0.1"}) == "203.0.113.9"
    assert g.client_ip("inprocess", {"x-forwarded-for": "garbage, 127.0.0.1"}) == "garbage"


def test_a_remote_grpc_peer_is_the_client_unless_trusted():
    assert gate().client_ip("ipv4:192.0.2.4:51234", {"x-forwarded-for": "203.0.113.9"}) == "192.0.2.4"
    assert gate("192.0.2.0/24").client_ip("ipv4:192.0.2.4:51234", {"x-forwarded-for": "203.0.113.9"}) == "203.0.113.9"
    assert gate().client_ip("ipv6:[2001:db8::1]:443", {}) == "2001:db8::1"
    assert gate().client_ip("ipv6:%5B2001:db8::1%5D:443", {}) == "2001:db8::1"


def test_rules_per_kind():
    g = gate()
    assert [(r.name, r.limit, r.window_s) for r in g.rules("catalog")] == [("open_ip", 100, 900.0)]
    assert [(r.name, r.limit) for r in g.rules("inference")] == [("open_ip", 100), ("open_ip_inference", 50)]
    assert [(r.name, r.limit, r.window_s) for r in g.rules("ws_connect")][1] == ("open_ip_ws", 5, 60.0)
