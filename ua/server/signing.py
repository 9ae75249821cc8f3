"""HMAC-signed, expiring storage URLs (upload PUT and download GET).

The signature covers the method, file ID, part index, size, md5 and expiry (upload) or
method, file ID and expiry (download). Signatures never appear in logs or error messages.
"""

from __future__ import annotations

import hashlib
import hmac
import time


class SignatureError(Exception):
    pass


def _mac(secret: bytes, *fields) -> str:
    msg = "\n".join(str(f) for f in fields).encode()
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def sign_upload(secret: bytes, file_id: str, index: int, size: int, md5: str, expires_s: int) -> str:
    return _mac(secret, "PUT", file_id, index, size, md5, expires_s)


def sign_download(secret: bytes, file_id: str, expires_s: int) -> str:
    return _mac(secret, "GET", file_id, expires_s)


def check(expected: str, given: str | None, expires_s: int) -> None:
    if not given or not hmac.compare_digest(expected, given):
        raise SignatureError("The request signature does not match (URL was altered or is not from this server)")
    if expires_s < time.time():
        raise SignatureError("The signed URL has expired; request a new one")
