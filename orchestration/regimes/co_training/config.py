"""The `online` section of a run config and its rules."""

from __future__ import annotations

from typing import Any, Optional

from pydantic import Field, field_validator, model_validator

from cluster import ModelSpec, Strict, check_name
from students import refuse_zero3


class PeerConfig(Strict):
    """One student trainer of an online co-training run; it also serves as teacher `peer-<name>`."""

    name: str
    model: Optional[ModelSpec] = Field(None, description="the peer's model; default: student.model")
    learns_from: Optional[list[str]] = Field(
        None, description="the peers whose live endpoints teach this one; default: every other peer. "
                          "[]: labels only (a teacher that keeps training while it teaches)")

    @field_validator("name")
    @classmethod
    def _short_name(cls, value: str) -> str:
        check_name(value)
        if len(value) > 43:
            raise ValueError(f"{value!r}: at most 43 chars (it is served as teacher 'peer-<name>')")
        return value


class OnlineConfig(Strict):
    """Online co-training: the peers train at the same time, each in its own Ray Train trainer,
    and each is served as a teacher endpoint whose weights are refreshed from its trainer
    (through the object store) while it trains. Peers that learn from others use
    `distill.terms` on those live endpoints (deep mutual learning); the baseline
    (`run.baseline`) trains every peer alone on labels."""

    peers: list[PeerConfig] = Field(min_length=2)
    refresh_every: int = Field(10, ge=1, description="steps between weight publications of each trainer")
    max_staleness: int = Field(20, ge=1, description="most steps a trainer may run ahead of the weights its "
                                                     "endpoint serves; it waits when further ahead")
    start_timeout_s: float = Field(600.0, gt=0, description="how long a trainer waits for the peers it learns "
                                                            "from to start or finish a round")

    @model_validator(mode="after")
    def _consistent(self) -> "OnlineConfig":
        names = [p.name for p in self.peers]
        if len(set(names)) != len(names):
            raise ValueError(f"peers: names must be unique, got {names}")
        for peer in self.peers:
            unknown = sorted(set(peer.learns_from or []) - set(names))
            if unknown or peer.name in (peer.learns_from or []):
                raise ValueError(f"peers.{peer.name}.learns_from: {sorted(unknown) or [peer.name]} is not another "
                                 f"peer of the run ({names})")
        if not any(self.teachers_of(p.name) for p in self.peers):
            raise ValueError("peers: no peer learns from another; give some peer a learns_from")
        if self.refresh_every > self.max_staleness:
            raise ValueError(f"refresh_every ({self.refresh_every}) must be <= max_staleness "
                             f"({self.max_staleness}): weights published less often are always too stale")
        return self

    def teachers_of(self, peer: str) -> list[str]:
        """The peers that teach `peer`."""
        spec = next(p for p in self.peers if p.name == peer)
        return spec.learns_from if spec.learns_from is not None else [p.name for p in self.peers if p.name != peer]


def check_online(cfg: Any) -> None:
    if cfg.online is None:
        return
    where = "online"
    if cfg.teachers or cfg.distill.methods or cfg.continual:
        raise ValueError(f"{where}: the peers are each other's teachers; drop teachers, distill.methods and "
                         f"continual (give the learning peers' loss in distill.terms)")
    if cfg.distill.mode == "offline" or not cfg.data.classification:
        raise ValueError(f"{where}: peers serve live class distributions; use distill.mode online and "
                         f"classification data (got {cfg.distill.mode}, {cfg.data.described})")
    if cfg.data.cross_modal:
        raise ValueError(f"{where}: a peer reads the students' input, but teachers are sent their own "
                         f"({cfg.data.described} is cross-modal); use one input")
    if any("teacher" in t.params for t in cfg.distill.terms or []):
        raise ValueError(f"{where}: peers serve no features; use response terms (kd, dkd, ...) in distill.terms")
    if cfg.distill.weighting.strategy in ("gating", "route"):
        raise ValueError(f"{where}: distill.weighting.strategy {cfg.distill.weighting.strategy} names fixed "
                         f"teachers; peers merge with static, confidence, entropy or label_agreement")
    refuse_zero3(cfg, f"{where}: each trainer publishes its weights from rank 0")
