"""tiergate: an LLM routing sidecar.

The package is organised by the phases of a request (see README's architecture section):
server → envelope → routing (planner, idempotency, dispatch) → providers → telemetry.
The latency-critical arithmetic lives in the Rust extension ``tiergate._core``.
"""

from tiergate._core import __version__

__all__ = ["__version__"]
