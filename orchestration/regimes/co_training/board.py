"""Where the peers of an online co-training run meet: plain Python, held by the orchestrator.

Each peer trainer publishes its weights as an object-store reference under a key
(round, step): the round is the seed's index, the step the trainer's optimizer step. The
board keeps only the reference (the orchestrator never fetches the weights); the peer's
endpoint replicas long-poll for a newer key, fetch the weights from the object store
themselves and report the key they serve. A trainer is `staleness` steps ahead of its
endpoint when its step minus the step its slowest replica serves is that large.

Rounds keep peers apart across seeds: a trainer starts round r once every peer has
finished round r - 1 and the peers it learns from serve round-r weights.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Optional

Key = tuple[int, int]  # (round, step)


class PeerTimeoutError(TimeoutError):
    pass


class PeerBoard:
    """Args:
        peers: every peer of the run.
        replicas: how many endpoint replicas serve each peer (all must load a key to serve it).
    """

    def __init__(self, peers: list[str], replicas: int = 1):
        self.peers = list(peers)
        self.replicas = replicas
        self._published: dict[str, tuple[Key, list[Any]]] = {}
        self._served: dict[str, dict[str, Key]] = {p: {} for p in self.peers}
        self._finished: dict[str, int] = {p: -1 for p in self.peers}
        self._changed = threading.Condition()

    # --- trainers ------------------------------------------------------------------------------
    def publish(self, peer: str, key: Key, weights: list[Any]) -> None:
        """`weights`: [object ref] (wrapped in a list so that no Ray call resolves it)."""
        self._check(peer)
        with self._changed:
            if peer not in self._published or key >= self._published[peer][0]:
                self._published[peer] = (tuple(key), weights)
            self._changed.notify_all()

    def finish_round(self, peer: str, round_: int) -> None:
        self._check(peer)
        with self._changed:
            self._finished[peer] = max(self._finished[peer], round_)
            self._changed.notify_all()

    def served(self, peer: str) -> Optional[Key]:
        """The key every replica of `peer` serves (the oldest of theirs); None until all serve one."""
        self._check(peer)
        with self._changed:
            keys = list(self._served[peer].values())
        return min(keys) if len(keys) >= self.replicas else None

    def wait_served(self, peer: str, key: Key, timeout_s: float) -> Key:
        """Block until `peer`'s endpoint serves `key` or newer; return what it serves."""
        self._wait(lambda: (self.served(peer) or (-1, -1)) >= tuple(key), timeout_s,
                   lambda: f"the endpoint of peer {peer!r} serves {self.served(peer)}, its trainer waits for "
                           f"{tuple(key)} (round, step)")
        return self.served(peer)

    def wait_round(self, peer: str, round_: int, teachers: list[str], timeout_s: float) -> None:
        """Block until every peer finished the rounds before `round_` and each of `teachers`
        serves weights of `round_`."""
        def ready() -> bool:
            return (all(done >= round_ - 1 for done in self._finished.values())
                    and all((self.served(t) or (-1, -1))[0] == round_ for t in teachers))

        def missing() -> str:
            behind = sorted(p for p, done in self._finished.items() if done < round_ - 1)
            cold = sorted(t for t in teachers if (self.served(t) or (-1, -1))[0] != round_)
            return (f"peer {peer!r} waits to start round {round_}: peers not done with round {round_ - 1}: "
                    f"{behind or 'none'}; teachers not serving round {round_} yet: {cold or 'none'}. Every peer "
                    f"trainer must run at once: check that the cluster has CPUs for all of them")

        self._wait(ready, timeout_s, missing)

    # --- endpoint replicas ---------------------------------------------------------------------
    def wait_published(self, peer: str, newer_than: Optional[Key], timeout_s: float) -> Optional[tuple[Key, list[Any]]]:
        """The latest (key, [weights ref]) of `peer` once newer than `newer_than`; None after `timeout_s`."""
        self._check(peer)
        newer = lambda: peer in self._published and (newer_than is None or self._published[peer][0] > tuple(newer_than))  # noqa: E731
        with self._changed:
            if not self._changed.wait_for(newer, timeout=timeout_s):
                return None
            return self._published[peer]

    def loaded(self, peer: str, replica: str, key: Key) -> None:
        self._check(peer)
        with self._changed:
            self._served[peer][replica] = tuple(key)
            self._changed.notify_all()

    def status(self) -> dict[str, Any]:
        with self._changed:
            return {p: {"published": self._published[p][0] if p in self._published else None,
                        "served": self.served(p), "finished_round": self._finished[p]} for p in self.peers}

    # --- internals -----------------------------------------------------------------------------
    def _check(self, peer: str) -> None:
        if peer not in self._served:
            raise KeyError(f"{peer!r} is not a peer of this run; peers: {self.peers}")

    def _wait(self, ready, timeout_s: float, explain) -> None:
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while not ready():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise PeerTimeoutError(f"after {timeout_s:g}s: {explain()}")
                self._changed.wait(timeout=left)
