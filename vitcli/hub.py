"""Reaching the Hugging Face hub: a quick reachability probe and the libraries' offline mode.

huggingface_hub retries an unreachable host with backoff for about 25 s (measured here: 23 s for one
`hf_hub_download` without network) before it falls back to its cache. Data sets and weights both ask
`reachable()` first; when the hub does not answer within a few seconds, the same library call runs in
offline mode, where it still serves a cached copy and otherwise fails at once.
"""

from __future__ import annotations

import contextlib
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

PROBE_TIMEOUT_S = 3.0


def offline_requested() -> bool:
    """Whether the user asked the libraries to stay offline (HF_HUB_OFFLINE=1), read as huggingface_hub does."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE) or os.environ.get("HF_HUB_OFFLINE", "").upper() in ("1", "ON", "YES", "TRUE")


def reachable(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the hub endpoint answers an HTTPS request within `timeout` seconds (DNS included).

    A full request rather than a TCP connect: intercepting proxies and captive portals accept
    connections to anything. urllib honours the same proxy variables as the libraries do.
    """
    from huggingface_hub import constants

    result: list[bool] = []

    def probe() -> None:
        request = urllib.request.Request(constants.ENDPOINT, method="HEAD")
        try:
            with urllib.request.urlopen(request, timeout=timeout):
                result.append(True)
        except urllib.error.HTTPError:  # the server answered, if only with an error status
            result.append(True)
        except (OSError, ValueError):  # URLError, TLS and timeouts are OSErrors
            result.append(False)

    # A thread, because name resolution has no timeout of its own and can hang on a dead network.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


@contextlib.contextmanager
def offline_mode() -> Iterator[None]:
    """Switch huggingface_hub to offline mode for one call.

    It reads HF_HUB_OFFLINE once at import into this module flag, so setting the environment variable
    after the fact would not do it.
    """
    from huggingface_hub import constants

    saved = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = saved
