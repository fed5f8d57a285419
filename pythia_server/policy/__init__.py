"""Decisions without I/O: routing, priority, cache actions and scaling.

Every policy here is a plain object that takes events and state (time arrives as
``now_s``) and returns decisions carrying a short ``reason``. The live gateway and the
offline replay drive the same objects; this package imports neither of them.
"""

from pythia_server.policy.types import CallInfo, ReplicaView, RouteDecision, Router
from pythia_server.policy.routing import RoundRobinRouter, make_router

__all__ = ["CallInfo", "ReplicaView", "RouteDecision", "RoundRobinRouter", "Router", "make_router"]
