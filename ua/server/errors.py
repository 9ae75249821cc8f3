"""DNAnexus-style API errors: ``{"error": {"type", "message"}}`` with the documented status."""

from __future__ import annotations

STATUS = {
    "MalformedJSON": 400,
    "BadDigest": 400,
    "InvalidAuthentication": 401,
    "PermissionDenied": 401,
    "ResourceNotFound": 404,
    "RequestTooLarge": 413,
    "InvalidInput": 422,
    "InvalidState": 422,
    "InvalidType": 422,
    "RateLimitConditional": 429,
    "InternalError": 500,
    "ServiceUnavailable": 503,
}


class APIError(Exception):
    type = "InternalError"

    def __init__(self, message: str, *, details=None, status: int | None = None):
        super().__init__(message)
        self.message = message
        self.details = details
        self.status = status or STATUS.get(self.type, 500)

    def body(self) -> dict:
        err = {"type": self.type, "message": self.message}
        if self.details is not None:
            err["details"] = self.details
        return {"error": err}


def _make(name: str):
    return type(name, (APIError,), {"type": name})


MalformedJSON = _make("MalformedJSON")
InvalidAuthentication = _make("InvalidAuthentication")
PermissionDenied = _make("PermissionDenied")
ResourceNotFound = _make("ResourceNotFound")
InvalidInput = _make("InvalidInput")
InvalidState = _make("InvalidState")
InvalidType = _make("InvalidType")
InternalError = _make("InternalError")
ServiceUnavailable = _make("ServiceUnavailable")
RateLimitConditional = _make("RateLimitConditional")


class RequestTooLarge(InvalidInput):
    """Body above the API size limit; DNAnexus JSON error with HTTP 413."""

    def __init__(self, message: str):
        super().__init__(message, status=413)
