"""Inline safety: PII, secrets and prompt-injection detectors on input; refusals and schema
validity on output. See :mod:`tiergate.safety.scan` for the policy and
:mod:`tiergate.safety.detectors` for what is detected and how fast.
"""

from tiergate.safety.detectors import INPUT_KINDS, find_spans, luhn_ok, redact_text
from tiergate.safety.scan import (
    OUTPUT_KINDS,
    Action,
    SafetyPolicy,
    SafetyResult,
    enforce,
    request_findings,
    scan_output,
    scan_request,
)

__all__ = [
    "INPUT_KINDS",
    "OUTPUT_KINDS",
    "Action",
    "SafetyPolicy",
    "SafetyResult",
    "enforce",
    "find_spans",
    "luhn_ok",
    "redact_text",
    "request_findings",
    "scan_output",
    "scan_request",
]
