"""`python -m harness.ray_node start [--head | --address=127.0.0.1:PORT] ... --block`: Ray's own
`ray start`, for the tests' head node and for a node that joins it on this machine.

The tests' clusters stay on loopback through Ray's loopback switch (`cluster.ray_env`), and
with that switch `ray start` refuses to join a node to a cluster, a check meant for laptops.
Without the switch Ray rewrites `127.0.0.1` into the machine's outward address. So this runs
the CLI with the switch on, and lifts only the CLI's own join check; every address Ray
resolves still resolves to loopback.
"""

import sys
import types

from cluster.ray_env import LOOPBACK_SWITCH, prepare_ray_env

if __name__ == "__main__":
    import os

    os.environ[LOOPBACK_SWITCH] = "0"
    os.environ.pop("RAY_ADDRESS", None)
    prepare_ray_env()
    from ray._private import ray_constants
    from ray.scripts import scripts

    scripts.ray_constants = types.SimpleNamespace(**{**vars(ray_constants), "ENABLE_RAY_CLUSTER": True})
    sys.exit(scripts.main())
