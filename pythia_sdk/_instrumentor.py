"""instrument() / uninstrument(): symmetric patching and the one shared Telemetry.

Every patch is recorded with the original it replaced and restored by
:func:`uninstrument`; instrumenting the same thing twice is a no-op with a warning.
Targets are strings (``"module:Class.attr"``) resolved only when instrument() runs.
"""

from __future__ import annotations

import importlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pythia_sdk._config import load_settings
from pythia_sdk._spans import Telemetry

log = logging.getLogger("pythia_sdk")


@dataclass(slots=True)
class Patch:
    """One replaced attribute and how to put it back."""

    owner: Any
    attr: str
    original: Any
    on_instance: bool  # an attribute we added where there was none (restore = delete)

    def restore(self) -> None:
        if self.on_instance:
            try:
                delattr(self.owner, self.attr)
            except AttributeError:
                pass
        else:
            setattr(self.owner, self.attr, self.original)


def resolve_target(target: str) -> tuple[Any, str]:
    """``"pkg.mod:Class.attr"`` -> (the Class object, "attr")."""
    module_name, _, path = target.partition(":")
    owner: Any = importlib.import_module(module_name)
    *owners, attr = path.split(".")
    for name in owners:
        owner = getattr(owner, name)
    return owner, attr


def patch_target(target: str, make: Callable[[Any], Any]) -> Patch:
    """Replace ``target`` with ``make(original)``; an inherited attribute is shadowed on
    the named class and the shadow deleted on restore."""
    owner, attr = resolve_target(target)
    own = attr in vars(owner)
    original = vars(owner)[attr] if own else getattr(owner, attr)
    setattr(owner, attr, make(original))
    return Patch(owner, attr, original, on_instance=not own)


def patch_instance(obj: Any, attr: str, wrapper: Any) -> Patch:
    """Shadow ``obj.attr`` with an instance attribute (class untouched)."""
    original = obj.__dict__.get(attr)
    object.__setattr__(obj, attr, wrapper)
    return Patch(obj, attr, original, on_instance=original is None)


class Registry:
    """Which keys are instrumented, their patches, and the Telemetry they share."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.patches: dict[str, list[Patch]] = {}
        self.telemetry: Telemetry | None = None
        #: Objects kept alive while instrumented (keys use their id()).
        self.objects: dict[str, Any] = {}

    def ensure_telemetry(
        self,
        *,
        endpoint: str | None,
        tracer_provider: Any,
        meter_provider: Any,
        capture_content: bool | None,
    ) -> Telemetry:
        """The shared Telemetry; the first instrument() call's settings win."""
        with self.lock:
            if self.telemetry is None:
                settings = load_settings(endpoint=endpoint, capture_content=capture_content)
                self.telemetry = Telemetry(settings, tracer_provider, meter_provider)
            elif tracer_provider is not None or endpoint is not None:
                log.debug("pythia: telemetry already configured; new settings ignored")
            return self.telemetry

    def add(self, key: str, patches: list[Patch], obj: Any = None) -> bool:
        with self.lock:
            if key in self.patches:
                for patch in patches:
                    patch.restore()
                return False
            self.patches[key] = patches
            if obj is not None:
                self.objects[key] = obj
            return True

    def has(self, key: str) -> bool:
        return key in self.patches

    def remove(self, key: str) -> bool:
        with self.lock:
            patches = self.patches.pop(key, None)
            self.objects.pop(key, None)
            if patches is None:
                return False
            for patch in reversed(patches):
                patch.restore()
            return True

    def remove_all(self) -> None:
        with self.lock:
            for key in list(self.patches)[::-1]:
                self.remove(key)
            if self.telemetry is not None:
                self.telemetry.shutdown()
                self.telemetry = None


REGISTRY = Registry()


def object_key(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}@{id(obj):x}"
