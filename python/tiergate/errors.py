"""One exception tree for the whole sidecar.

::

    TiergateError
    ├── ConfigError          a config file is wrong; lists every problem by path
    ├── RequestError         the caller's mistake → 4xx in the caller's API shape
    ├── ProviderError        one upstream attempt failed; carries its ErrorClass,
    │                        whether another deployment may succeed, and Retry-After
    └── DispatchError        no attempt succeeded (deadline passed, plan exhausted,
                             nothing feasible); rendered in the caller's API shape

Every error a caller sees has a stable ``type`` and ``code``; messages name the field
at fault and never contain a secret.
"""

from __future__ import annotations

from enum import Enum

__all__ = [
    "ConfigError",
    "DispatchError",
    "ErrorClass",
    "ProviderError",
    "RequestError",
    "TiergateError",
]


class TiergateError(Exception):
    """Base of every error tiergate raises on purpose."""


class ConfigError(TiergateError):
    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


class RequestError(TiergateError):
    """A caller's mistake. ``param`` names the offending field (dotted path)."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        status: int = 400,
        type: str = "invalid_request_error",
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.type = type
        self.code = code


class ErrorClass(str, Enum):
    """Every provider failure maps to one of these (see providers/normalise.py)."""

    RATE_LIMITED = "rate_limited"
    OVERLOADED = "overloaded"
    SERVER_ERROR = "server_error"
    TIMEOUT = "timeout"
    CONNECT = "connect"
    CONTEXT_LENGTH = "context_length"
    CONTENT_POLICY = "content_policy"
    AUTH = "auth"
    BAD_REQUEST = "bad_request"
    # The provider answered, but not with what was asked (malformed stream, JSON that
    # fails the requested schema): a sibling may do better.
    INVALID_OUTPUT = "invalid_output"

    @property
    def retryable(self) -> bool:
        """True when another attempt (usually on another deployment) may succeed."""
        return self not in _CALLER_FAULT


# The caller's own mistakes: another deployment would refuse them too.
_CALLER_FAULT = frozenset({ErrorClass.BAD_REQUEST, ErrorClass.CONTENT_POLICY})


class ProviderError(TiergateError):
    def __init__(
        self,
        error_class: ErrorClass,
        message: str,
        *,
        status: int | None = None,
        retry_after_s: float | None = None,
        provider: str = "",
    ) -> None:
        super().__init__(message)
        self.error_class = error_class
        self.message = message
        self.status = status
        self.retry_after_s = retry_after_s
        self.provider = provider

    @property
    def retryable(self) -> bool:
        return self.error_class.retryable

    def __repr__(self) -> str:
        return (
            f"ProviderError({self.error_class.value}, status={self.status}, "
            f"retry_after_s={self.retry_after_s}, {self.message!r})"
        )


class DispatchError(TiergateError):
    """No attempt succeeded. ``status``/``type``/``code`` are what the caller sees."""

    def __init__(
        self,
        message: str,
        *,
        status: int,
        type: str,
        code: str,
        last: ProviderError | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.type = type
        self.code = code
        self.last = last
