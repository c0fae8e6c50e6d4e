"""telemetry phase of tiergate: request log, OpenTelemetry, Prometheus, CloudWatch, safety
stream and drift aggregates, all fed from :class:`RequestRecord` off the request path.

Server wiring (see :mod:`tiergate.telemetry.hub` for every hook)::

    telemetry = Telemetry.from_config(config); await telemetry.start()
    add_admin_routes(admin_app, telemetry)      # GET /metrics
    feedback_handler(telemetry, read)           # POST /v1/feedback (traffic port)
    ...
    telemetry.record(rec)                       # once per request
    await telemetry.stop()                      # on shutdown (flushes)

Exports load lazily, so importing :mod:`tiergate.telemetry.record` stays cheap and free
of import cycles (the safety package uses it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tiergate.telemetry.record import AttemptRecord, RequestRecord, SafetyFinding

if TYPE_CHECKING:
    from tiergate.telemetry.http import (
        TELEMETRY,
        add_admin_routes,
        feedback_handler,
        metrics_handler,
    )
    from tiergate.telemetry.hub import Telemetry

__all__ = [
    "TELEMETRY",
    "AttemptRecord",
    "RequestRecord",
    "SafetyFinding",
    "Telemetry",
    "add_admin_routes",
    "feedback_handler",
    "metrics_handler",
]

_LAZY = {
    "Telemetry": "tiergate.telemetry.hub",
    "TELEMETRY": "tiergate.telemetry.http",
    "add_admin_routes": "tiergate.telemetry.http",
    "feedback_handler": "tiergate.telemetry.http",
    "metrics_handler": "tiergate.telemetry.http",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tiergate.telemetry' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
