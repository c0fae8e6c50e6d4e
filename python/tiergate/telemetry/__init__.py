"""telemetry phase of tiergate: request log, OpenTelemetry, Prometheus, CloudWatch, safety
stream and drift aggregates, all fed from :class:`RequestRecord` off the request path.

Server wiring (see :mod:`tiergate.telemetry.hub` for every hook)::

    telemetry = Telemetry.from_config(config); await telemetry.start()
    add_admin_routes(admin_app, telemetry)      # GET /metrics
    add_feedback_route(app, telemetry)          # POST /v1/feedback
    ...
    telemetry.record(rec)                       # once per request
    await telemetry.stop()                      # on shutdown (flushes)
"""

from tiergate.telemetry.http import (
    TELEMETRY,
    add_admin_routes,
    add_feedback_route,
    feedback_handler,
    metrics_handler,
)
from tiergate.telemetry.hub import Telemetry
from tiergate.telemetry.record import AttemptRecord, RequestRecord, SafetyFinding

__all__ = [
    "TELEMETRY",
    "AttemptRecord",
    "RequestRecord",
    "SafetyFinding",
    "Telemetry",
    "add_admin_routes",
    "add_feedback_route",
    "feedback_handler",
    "metrics_handler",
]
