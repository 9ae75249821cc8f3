"""Tuning knobs read from the environment, for tests and unusual networks.

Production defaults live next to the code that uses them; every knob is listed in the
README ("Test knobs"): UA_RETRY_BASE_DELAY, UA_STALL_TIMEOUT, UA_PUT_TIMEOUT_FLOOR,
UA_PUT_MIN_RATE, UA_WAIT_ON_CLOSE_TIMEOUT, UA_MAX_RESPONSE_BYTES, UA_PROGRESS_INTERVAL.
"""

from __future__ import annotations

import os


def env_float(name: str, default: float) -> float:
    """``$name`` as a float; unset, empty or unparsable values give ``default``."""
    try:
        return float(os.environ.get(name, "") or default)
    except ValueError:
        return default
