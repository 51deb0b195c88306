"""The kit's own errors: each carries one line that says what went wrong and what to do."""


class KitError(Exception):
    """Base class; command-line entry points print `str(error)` alone, without a traceback."""


class ConfigError(KitError, ValueError):
    """An unknown name or a value outside its allowed range."""


class DataUnavailableError(KitError):
    """A data set or model could not be loaded (Hub unreachable, missing local file)."""


def hub_unreachable(timeout: float = 3.0) -> bool:
    """True when huggingface.co cannot be reached and the user has not asked for offline mode.

    Checked before any Hub call so that an offline machine fails in seconds with one clear line
    instead of a wall of retries. With HF_HUB_OFFLINE=1 the libraries read their local cache."""
    import os
    import socket

    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return False
    except OSError:
        return True
