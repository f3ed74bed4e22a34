"""The one small HTTP core under both API clients."""

from shared.http.core import HttpCore, RetryPolicy, Timeouts
from shared.http.errors import (
    ApiError,
    AuthError,
    BadRequestError,
    CredentialError,
    NotFoundError,
    PreconditionFailedError,
    ServerError,
    ThrottledError,
    TransportError,
)

__all__ = [
    "ApiError",
    "AuthError",
    "BadRequestError",
    "CredentialError",
    "HttpCore",
    "NotFoundError",
    "PreconditionFailedError",
    "RetryPolicy",
    "ServerError",
    "ThrottledError",
    "Timeouts",
    "TransportError",
]
