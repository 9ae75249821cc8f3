"""One exception hierarchy for everything the client can run into.

::

    UAError
    ├── TransientError            retry may help (retry.py decides how often and how long)
    │   ├── ConnectError          never reached the server (refused, DNS, unreachable)
    │   ├── ConnectionLost        reset / closed mid-request, server disconnected
    │   ├── RequestTimeout        connect or total deadline passed
    │   │   └── StallError        no byte moved for the stall window
    │   ├── BadResponse           broken response (truncated, bad JSON, wrong content type)
    │   ├── TransientHTTPError    non-JSON 5xx/429, or S3-style non-JSON 400 on a PUT
    │   └── TransientAPIError     JSON error with a 5xx or 429 status (also an APIError)
    └── PermanentError            retrying will not help
        ├── APIError              JSON error {"error": {"type", "message"}} with a 4xx status
        │   ├── InvalidAuthentication, PermissionDenied, ResourceNotFound,
        │   ├── InvalidInput, InvalidState, InvalidType, SpendingLimitExceeded, …
        ├── HTTPError             non-JSON error response that is not retryable
        ├── TLSError              certificate verification failed
        ├── UploadError           pipeline-level failure of one file (carries a user message)
        │   ├── FileTooLarge, LocalFileChanged, VerificationError
        └── RetriesExhausted      a part ran out of tries; ``last`` is the final error

Only :mod:`ua.api.retry` looks at these classes to decide whether and when to retry.
User-facing text follows the Upload Agent: ``<type>: '<message>', Server returned HTTP code '<n>'``.
"""

from __future__ import annotations

from typing import Any


class UAError(Exception):
    """Base of every error ua raises on purpose."""

    status: int | None = None
    retry_after: float | None = None  # seconds from a Retry-After header, if any

    def __init__(self, message: str = "", *, status: int | None = None,
                 retry_after: float | None = None, route: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status
        self.retry_after = retry_after
        self.route = route

    @property
    def throttled(self) -> bool:
        """True for 503 and 429: "come back later", which does not spend a try."""
        return self.status in (429, 503)

    def __str__(self) -> str:  # pragma: no cover - trivial
        return self.message


class TransientError(UAError):
    """A failure that a later attempt may not have."""


class PermanentError(UAError):
    """A failure that a retry will not fix."""


class ConnectError(TransientError):
    """The request never reached the server (refused, DNS, network unreachable)."""


class ConnectionLost(TransientError):
    """The connection broke during the request (reset, closed, server disconnected)."""


class RequestTimeout(TransientError):
    """A deadline passed (connect timeout, or a part's size-scaled total)."""


class StallError(RequestTimeout):
    """No byte moved in either direction for the stall window."""


class BadResponse(TransientError):
    """A response arrived but is broken: truncated, not JSON where JSON was needed, …"""


class HTTPError(PermanentError):
    """A non-2xx response whose body is not a DNAnexus JSON error, and not retryable."""

    def __init__(self, status: int, body: str, *, route: str | None = None) -> None:
        self.body = body
        super().__init__(http_error_text(status, body), status=status, route=route)


class TransientHTTPError(TransientError):
    """A non-JSON 5xx/429, or an S3-style non-JSON 400 answering a PUT."""

    def __init__(self, status: int, body: str, *, route: str | None = None,
                 retry_after: float | None = None) -> None:
        self.body = body
        super().__init__(http_error_text(status, body), status=status, route=route,
                         retry_after=retry_after)


class RedirectRefused(PermanentError):
    """The API or storage server answered 3xx; ua never follows a redirect (the token or the
    part would go somewhere the user did not configure)."""


class ResponseTooLarge(PermanentError):
    """A response body exceeded the size ua is willing to read into memory."""


class TLSError(PermanentError):
    """TLS certificate verification failed."""


class APIError(PermanentError):
    """A DNAnexus JSON error: ``{"error": {"type": T, "message": M, "details": D}}``."""

    def __init__(self, type: str, message: str, status: int, *, details: Any = None,
                 route: str | None = None, retry_after: float | None = None) -> None:
        self.type = type
        self.api_message = message
        self.details = details
        super().__init__(api_error_text(type, message, status), status=status, route=route,
                         retry_after=retry_after)


class TransientAPIError(APIError, TransientError):
    """A JSON API error with a 5xx or 429 status (InternalError, ServiceUnavailable, …)."""


class InvalidAuthentication(APIError):
    pass


class PermissionDenied(APIError):
    pass


class ResourceNotFound(APIError):
    pass


class InvalidInput(APIError):
    pass


class InvalidState(APIError):
    pass


class InvalidType(APIError):
    pass


class SpendingLimitExceeded(APIError):
    pass


class MalformedJSON(APIError):
    pass


class BadDigest(APIError):
    """Storage says the body does not match its Content-MD5. Transient on a PUT (the bytes
    were damaged on the way); the pipeline re-sends from its own buffer."""


API_ERROR_CLASSES: dict[str, type[APIError]] = {
    cls.__name__: cls
    for cls in (InvalidAuthentication, PermissionDenied, ResourceNotFound, InvalidInput,
                InvalidState, InvalidType, SpendingLimitExceeded, MalformedJSON, BadDigest)
}


class UploadError(PermanentError):
    """A file-level failure with a message meant for the user."""


class FileTooLarge(UploadError):
    pass


class LocalFileChanged(UploadError):
    pass


class VerificationError(UploadError):
    """The server's part sizes/MD5s do not match what we sent."""


class RetriesExhausted(PermanentError):
    """An operation failed on every allowed try. ``last`` is the final error."""

    def __init__(self, message: str, last: BaseException, attempts: int) -> None:
        super().__init__(message, status=getattr(last, "status", None))
        self.last = last
        self.attempts = attempts


def api_error_text(type: str, message: str, status: int | None) -> str:
    """The Upload Agent's wording: ``InvalidInput: 'bad', Server returned HTTP code '422'``."""
    return f"{type}: '{message}', Server returned HTTP code '{status}'"


def http_error_text(status: int, body: str) -> str:
    body = (body or "").strip()
    if len(body) > 300:
        body = body[:300] + "…"
    return f"Request failed with HTTP status code {status}, server response: '{body}'"


def make_api_error(status: int, type: str, message: str, *, details: Any = None,
                   route: str | None = None, retry_after: float | None = None) -> APIError:
    """Build the right class for a JSON error body and status."""
    if status >= 500 or status == 429:
        return TransientAPIError(type, message, status, details=details, route=route,
                                 retry_after=retry_after)
    cls = API_ERROR_CLASSES.get(type, APIError)
    return cls(type, message, status, details=details, route=route, retry_after=retry_after)


def describe_error(exc: BaseException) -> str:
    """One line for stderr / --json from any exception."""
    if isinstance(exc, RetriesExhausted):
        return f"{exc.message} (after {exc.attempts} tries): {describe_error(exc.last)}"
    if isinstance(exc, UAError):
        return exc.message or type(exc).__name__
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
