"""The orchestrator's online co-training: peers that teach each other, met on a peer board
(`orchestration.regimes.co_training.board`) and served as live teachers."""

from __future__ import annotations

from typing import Any, Optional

from ray import serve

from orchestration.regimes.co_training.board import Key, PeerBoard
from orchestration.teacher_training import teacher_app_args
from teachers import TeacherConfig, TeacherEntry, app_name, build_teacher_app, peer_teacher_name


class PeerTeachers:
    """Methods of the `Orchestrator` actor (a mixin: it reads the actor's config, dataset, lock
    and teacher set, and keeps the peer board in `self.peers`)."""

    def start_peers(self, names: list[str], served: list[dict[str, Any]], replicas: int = 1) -> list[dict[str, Any]]:
        """Meet the peer trainers `names` on a peer board, and serve each peer of `served`
        (`{"name", "model"}`: those another learns from) as live teacher `peer-<name>`; its
        replicas load the weights its trainer publishes (they answer nothing before the first)."""
        if self.peers is None:
            self.peers = PeerBoard(names, replicas)
        out = []
        for peer in served:
            name = peer_teacher_name(peer["name"])
            if name in self._teacher_set.teachers:
                continue
            cfg = TeacherConfig(name=name, model=peer["model"],
                                resources=self.config.student.serve_resources.model_copy(update={"replicas": replicas}))
            args = teacher_app_args(cfg, None, self.dataset, self.config.distill, self.config.run.allowed_factory_modules,
                                    live_run=self.run, audit_dir=self._audit_dir)
            serve.run(build_teacher_app(args), name=app_name(name), route_prefix=None)
            info = serve.get_app_handle(app_name(name)).describe.remote().result(timeout_s=120)
            entry = TeacherEntry(name, 1.0, info["output_space"], info["num_classes"], f"live:{name}",
                                 info["parameters"], live=True)
            with self._lock:
                self._apps[name] = args
                self._teacher_set = self._teacher_set.with_teacher(entry)
                self._event("teacher_added", teacher=name, model_version=entry.model_version, weight=1.0, live=True)
            out.append({"name": name, **info})
        return out

    def publish_weights(self, peer: str, key: Key, weights: list[Any]) -> None:
        """A trainer's rank 0 publishes `[ray.put(state_dict)]`; only the reference passes here."""
        self.peers.publish(peer, key, weights)

    def wait_published(self, peer: str, newer_than: Optional[Key], timeout_s: float = 2.0):
        return self.peers.wait_published(peer, newer_than, timeout_s)

    def peer_loaded(self, peer: str, replica: str, key: Key) -> None:
        self.peers.loaded(peer, replica, key)

    def served_key(self, peer: str) -> Optional[Key]:
        return self.peers.served(peer)

    def wait_served(self, peer: str, key: Key, timeout_s: float) -> Key:
        return self.peers.wait_served(peer, key, timeout_s)

    def wait_round(self, peer: str, round_: int, teachers: list[str], timeout_s: float) -> None:
        self.peers.wait_round(peer, round_, teachers, timeout_s)

    def finish_round(self, peer: str, round_: int) -> None:
        self.peers.finish_round(peer, round_)
        self._event("peer_round_done", peer=peer, round=round_)
