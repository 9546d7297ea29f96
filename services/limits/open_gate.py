"""Seed 004's open mode: keyless inference, catalogue and /ws, under per-IP limits instead.

Off unless `open_mode = true` (docs/open-mode.md says the risks). When on, a call that brings
no credentials at all to an RPC marked open (inference from seed 004's surfaces or /ws, the
model catalogue, a /ws connect) is admitted here as the anonymous "open" principal, after:
- every open call: `open_max_requests` per client IP per `open_window_s` (seed 004: 100 / 15 min);
- inference: also `open_inference_max` per IP per window (50 / 15 min);
- a /ws connect: also `open_ws_per_minute` per IP per minute (5);
- `max_concurrent_requests` open calls in flight at once on this gateway: 503 past it.
The counts live in the gateway's limiter (Redis when configured: one count across replicas).
A call with credentials is never judged here: a bad key is still a 401.

The client IP: the gRPC peer, unless that peer is a trusted proxy, in which case the right-most
X-Forwarded-For entry that is not a trusted proxy. The in-process bridge is the first trusted
hop (it appends the address it saw); nothing else is believed unless `trusted_proxies` names it.
"""

from __future__ import annotations

import ipaddress
from typing import Any, Callable, Mapping
from urllib.parse import unquote

from services.core.principal import Principal
from services.core import errors as E
from services.limits.base import Decision, Rule

FORWARDED = "x-forwarded-for"
OPEN_EVENT = "x-tollgate-open-event"  # the bridge says "ws_connect" on a /ws upgrade's check
KINDS = ("catalog", "inference", "ws_connect")
OPEN_SURFACES = ("api_v1", "ws")  # seed 004's inference routes and /ws; the OpenAI and /api surfaces stay keyed
OpenKind = str | Callable[[Any], str]  # what an RPC is in open mode ("" = not open), fixed or from its request
OPEN_PRINCIPAL = "open"


class OpenGate:
    def __init__(self, cfg: Any, limiter: Any) -> None:
        self.enabled = bool(cfg.open_mode)
        self.window_s = float(cfg.open_window_s)
        self.max_requests = int(cfg.open_max_requests)
        self.inference_max = int(cfg.open_inference_max)
        self.ws_per_minute = int(cfg.open_ws_per_minute)
        self.max_in_flight = int(cfg.max_concurrent_requests)
        self.trusted = tuple(ipaddress.ip_network(c, strict=False) for c in cfg.trusted_proxies)
        self.limiter = limiter
        self.in_flight = 0

    def rules(self, kind: str) -> tuple[Rule, ...]:
        out = [Rule("open_ip", self.max_requests, window_s=self.window_s)]
        if kind == "inference":
            out.append(Rule("open_ip_inference", self.inference_max, window_s=self.window_s))
        elif kind == "ws_connect":
            out.append(Rule("open_ip_ws", self.ws_per_minute, window_s=60.0))
        return tuple(out)

    def client_ip(self, peer: str, md: Mapping[str, str]) -> str:
        hops = [h.strip() for h in md.get(FORWARDED, "").split(",") if h.strip()]
        addr = _peer_ip(peer)
        trusted = addr is None or self._trusted(addr)  # in-process: the bridge itself, which appended what it saw
        while trusted and hops:
            addr = hops.pop()
            trusted = self._trusted(addr)
        return addr or "unknown"

    async def admit(self, kind: str, peer: str, md: Mapping[str, str]) -> tuple[Principal, Decision]:
        """The open principal for this call, counted; raises 429 / 503. Pair with leave()."""
        ip = self.client_ip(peer, md)
        d = await self.limiter.hit("ip:" + ip, self.rules(kind))
        if not d.allowed:
            what = {"open_ip_inference": "inference requests", "open_ip_ws": "WebSocket connections"}.get(d.rule, "requests")
            raise E.ResourceExhausted(f"Too many {what} from this address; retry after {d.retry_after_s:.0f} s",
                                      reason="IP_RATE_LIMITED", retry_after_s=max(d.retry_after_s, 1.0),
                                      metadata={"limit": str(d.limit), "rule": d.rule})
        if self.max_in_flight and self.in_flight >= self.max_in_flight:
            raise E.Unavailable(f"The gateway is at its limit of {self.max_in_flight} concurrent requests; retry shortly",
                                reason="TOO_MANY_CONCURRENT_REQUESTS", retry_after_s=1.0)
        self.in_flight += 1
        return Principal(OPEN_PRINCIPAL, "anonymous", "unlimited", name="open mode"), d

    def leave(self) -> None:
        self.in_flight -= 1

    def _trusted(self, addr: str) -> bool:
        try:
            ip = ipaddress.ip_address(addr)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)


def _peer_ip(peer: str) -> str | None:
    """grpc's "ipv4:1.2.3.4:5678" / "ipv6:[::1]:5678" -> the address; None for the in-process bridge."""
    if not peer or peer == "inprocess":
        return None
    kind, _, rest = unquote(peer).partition(":")
    if kind == "ipv6":
        return rest.rpartition("]")[0].lstrip("[").split("%")[0] or rest
    if kind == "ipv4":
        return rest.rpartition(":")[0]
    return peer
