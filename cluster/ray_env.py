"""Environment Ray must see before it is imported: token authentication and loopback.

- `RAY_AUTH_MODE=token`: Ray's token authentication stays on, and clients that attach to a
  running cluster (`teacher add`, `status`) present the token from `~/.ray/auth_token`.
- Loopback: on one machine (no `RAY_ADDRESS`) Ray would bind to, and rewrite `127.0.0.1`
  into, the machine's outward address. The switch below (named for its use on macOS and
  Windows) makes Ray treat the node as loopback-only.

Ray reads both when it is imported, so entry points call `prepare_ray_env()` first.
"""

from __future__ import annotations

import os
import sys

LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def prepare_ray_env() -> bool:
    """Set the defaults above (user-set values win); return False if ray was imported already."""
    changed = "RAY_AUTH_MODE" not in os.environ
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    if not os.environ.get("RAY_ADDRESS") and LOOPBACK_SWITCH not in os.environ:
        os.environ[LOOPBACK_SWITCH] = "0"
        changed = True
    return not changed or "ray" not in sys.modules
