"""DNAnexus API client: errors, retry policy, transport, typed routes."""

from ua.api.client import DXClient, new_nonce
from ua.api.errors import (
    APIError,
    PermanentError,
    TransientAPIError,
    TransientError,
    UAError,
    describe_error,
)
from ua.api.transport import APIConfig, mask_token, mask_url

__all__ = [
    "APIConfig", "DXClient", "new_nonce", "UAError", "TransientError", "PermanentError",
    "APIError", "TransientAPIError", "describe_error", "mask_token", "mask_url",
]
