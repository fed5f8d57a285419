"""What a running SGLang server supports, read from its `/server_info`, with reasons.

`/server_info` carries SGLang's version and every resolved launch argument
(`schedule_policy`, `enable_priority_scheduling`, `radix_eviction_policy`, ...) plus a
`kv_events` descriptor. A key missing altogether means the version predates the feature.
The gateway logs `degraded()` once per replica and the report shows `as_dict()`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Feature:
    name: str
    enabled: bool
    reason: str


@dataclass(frozen=True, slots=True)
class FeatureSet:
    """Per-replica capabilities from `/server_info`; each entry says why it is on or off."""

    version: str | None
    features: tuple[Feature, ...]

    def enabled(self, name: str) -> bool:
        return any(f.name == name and f.enabled for f in self.features)

    def degraded(self) -> list[Feature]:
        return [f for f in self.features if not f.enabled]

    def as_dict(self) -> dict[str, object]:
        return {
            "version": self.version,
            "features": {f.name: {"enabled": f.enabled, "reason": f.reason} for f in self.features},
        }

    def log_degradations(self, replica: str, needed: Collection[str] | None = None) -> None:
        """Log what this replica lacks: a warning for what ``needed`` names (all when None),
        an info line for features the running policy does not use."""
        for f in self.degraded():
            level = logging.WARNING if needed is None or f.name in needed else logging.INFO
            log.log(level, "replica %s (SGLang %s): %s unavailable: %s", replica, self.version or "?", f.name, f.reason)

    @classmethod
    def from_server_info(cls, info: Mapping[str, object], *, loads_endpoint: bool | None = None) -> FeatureSet:
        version = str(info["version"]) if info.get("version") else None
        feats = [
            _flag_feature(
                info, "metrics", "enable_metrics", "--enable-metrics off: load comes from /v1/loads or gateway counts"
            ),
            _flag_feature(
                info,
                "cache_report",
                "enable_cache_report",
                "--enable-cache-report off: cached_tokens missing from usage",
            ),
            _priority_feature(info),
            _equals_feature(info, "priority_eviction", "radix_eviction_policy", "priority"),
            _equals_feature(info, "priority_retraction", "retraction_policy", "priority"),
            _flag_feature(
                info,
                "session_radix_cache",
                "enable_session_radix_cache",
                "--enable-session-radix-cache off: sessions are not pinned",
            ),
            _kv_events_feature(info),
            _at_least(version, "prefill_only_warm", (0, 4), "max_new_tokens 0 warms a prefix"),
        ]
        if loads_endpoint is not None:
            feats.append(
                Feature(
                    "v1_loads",
                    loads_endpoint,
                    "/v1/loads answers" if loads_endpoint else "/v1/loads missing: load from /metrics",
                )
            )
        return cls(version, tuple(feats))


def _flag_feature(info: Mapping[str, object], name: str, key: str, off_reason: str) -> Feature:
    if key not in info:
        return Feature(name, False, f"this SGLang has no {key} (older version)")
    return Feature(name, bool(info[key]), f"{key}=true" if info[key] else off_reason)


def _equals_feature(info: Mapping[str, object], name: str, key: str, want: str) -> Feature:
    if key not in info:
        return Feature(name, False, f"this SGLang has no {key} (older version)")
    value = info[key]
    return Feature(name, value == want, f"{key}={value}" + ("" if value == want else f", not {want}"))


def _priority_feature(info: Mapping[str, object]) -> Feature:
    if "enable_priority_scheduling" not in info:
        return Feature("priority_scheduling", False, "this SGLang has no priority scheduling (older version)")
    policy = info.get("schedule_policy")
    if not info["enable_priority_scheduling"]:
        return Feature("priority_scheduling", False, "--enable-priority-scheduling off: priorities are ignored")
    if policy not in ("fcfs", "lof"):
        return Feature("priority_scheduling", False, f"schedule_policy={policy}: priority needs fcfs or lof")
    return Feature("priority_scheduling", True, f"schedule_policy={policy} with priority")


def _kv_events_feature(info: Mapping[str, object]) -> Feature:
    descriptor = info.get("kv_events")
    if isinstance(descriptor, Mapping) and descriptor.get("endpoint_port_base"):
        return Feature(
            "kv_events",
            True,
            f"publisher on port {descriptor['endpoint_port_base']}, block_size {descriptor.get('block_size')}",
        )
    if info.get("kv_events_config"):
        return Feature(
            "kv_events", True, "kv_events_config set (no /server_info descriptor: endpoints from the launch plan)"
        )
    return Feature(
        "kv_events", False, "--kv-events-config off: prefix index falls back to the gateway's own bookkeeping"
    )


def _at_least(version: str | None, name: str, minimum: tuple[int, int], what: str) -> Feature:
    parsed = parse_version(version)
    if parsed is None:
        return Feature(name, True, f"{what} (version unknown: assumed)")
    ok = parsed[:2] >= minimum
    return Feature(name, ok, what if ok else f"SGLang {version} < {minimum[0]}.{minimum[1]}")


def parse_version(version: str | None) -> tuple[int, ...] | None:
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version or "")
    return tuple(int(g) for g in match.groups() if g is not None) if match else None
