"""Online co-training (deep mutual learning): peer students train at once and teach each
other through live endpoints that serve each peer's newest weights.

Config: `online` (`OnlineConfig`, checked by `check_online`: peers, who learns from whom, refresh and
staleness bounds). Phases (`online_jobs`): per seed a round in which every peer trains with
its peers, then with `run.baseline` every peer alone on labels; each peer has its own Ray
Train run (`orchestration.run.train_peers`). Worker hook: `CoTraining` publishes the peer's
weights and keeps it within `max_staleness` steps of what its endpoint serves. Results: each
peer trained with its peers ("mutual") against the same peer trained alone on labels, mean
and spread over seeds, and how stale the live teachers' weights were.
"""

from __future__ import annotations

import statistics
from typing import Any, Optional

import torch.distributed as dist
from pydantic import Field, field_validator, model_validator

from cluster import ModelSpec, Strict, check_name

from orchestration.regimes.born_again import INIT_SEED_STRIDE
from orchestration.results import mean_std
from students import (OnlineRole, Phase, PhaseHook, RunControl, StudentJob, TargetLag, Term, Weighting, WeightPublisher,
                      preset_terms, refuse_zero3, TEXT_DATASETS)
from teachers import ResolvedModel, peer_teacher_name


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
    if cfg.distill.mode == "offline" or cfg.data.dataset in TEXT_DATASETS:
        raise ValueError(f"{where}: peers serve live class distributions; use distill.mode online and a "
                         f"classification dataset (got {cfg.distill.mode}, {cfg.data.dataset})")
    if cfg.data.teacher_column != cfg.data.student_column:
        raise ValueError(f"{where}: a peer reads the student's view, but teachers are sent "
                         f"{cfg.data.teacher_column}; use one view")
    if any("teacher" in t.params for t in cfg.distill.terms or []):
        raise ValueError(f"{where}: peers serve no features; use response terms (kd, dkd, ...) in distill.terms")
    if cfg.distill.weighting.strategy in ("gating", "route"):
        raise ValueError(f"{where}: distill.weighting.strategy {cfg.distill.weighting.strategy} names fixed "
                         f"teachers; peers merge with static, confidence, entropy or label_agreement")
    refuse_zero3(cfg, f"{where}: each trainer publishes its weights from rank 0")


class CoTraining(PhaseHook):
    def __init__(self, role: OnlineRole):
        self.role = role
        self.publisher: Optional[WeightPublisher] = None
        self.lag = TargetLag()

    def before_phase(self, phase: Phase) -> None:
        """Rank 0 publishes the round's first weights and waits for the peers; every rank waits for rank 0."""
        self.publisher = WeightPublisher(self.role, phase.control, phase.rank)
        self.publisher.start(phase.model, phase.step)
        if dist.is_initialized():
            dist.barrier()

    def after_step(self, phase: Phase, step: int, targets) -> dict:
        self.lag.observe(targets, step)
        self.publisher.after_step(phase.model, step)
        return {}

    def log_metrics(self) -> dict[str, Any]:
        return {**self.publisher.metrics(), **self.lag.metrics()}

    def after_training(self, phase: Phase) -> None:
        self.publisher.finish(phase.model, phase.step)

    def final_metrics(self, phase: Phase, evaluate) -> dict[str, Any]:
        return self.publisher.summary()

    def on_done_before(self, control: RunControl, rank: int) -> None:
        """A resumed peer trainer tells the (new) orchestrator which rounds it finished before, so
        that peers still in those rounds are not taught by its next round's weights."""
        if rank == 0:
            control.finish_round(self.role.peer, self.role.round)


# --- phases -------------------------------------------------------------------------------------
def online_phase(peer: str, seed: int, mutual: bool) -> str:
    """`mutual-a-seed0` (trained with its peers), `alone-a-seed0` (the same peer on labels only)."""
    return f"{'mutual' if mutual else 'alone'}-{peer}-seed{seed}"


def online_jobs(cfg: Any, terms: list[Term], models: dict[str, ResolvedModel],
                control: Optional[RunControl]) -> dict[str, list[StudentJob]]:
    """An online co-training run: every peer's phases, in the order its own trainer runs them.

    Per seed (a round) each peer trains with its peers at the same time, learning from the
    live endpoints of the peers in its `learns_from` and publishing its weights to its own;
    then, with `run.baseline`, every peer trains alone on labels for each seed. Peer i of seed s
    starts from the same weights in both (init seed s + i * INIT_SEED_STRIDE).
    """
    online = cfg.online
    taught = {t for p in online.peers for t in online.teachers_of(p.name)}
    jobs: dict[str, list[StudentJob]] = {}
    for index, peer in enumerate(online.peers):
        teachers = online.teachers_of(peer.name)
        names = [peer_teacher_name(t) for t in teachers]
        common = dict(model=models[peer.name], student=cfg.student, distill=cfg.distill, data=cfg.data,
                      control=control, trainer=peer.name)
        mutual = [StudentJob(
            phase=online_phase(peer.name, seed, True), seed=seed, init_seed=seed + INIT_SEED_STRIDE * index,
            terms=terms if teachers else preset_terms("ce", 1.0), use_teachers=bool(teachers),
            teachers=names, weighting=Weighting.from_config(cfg.distill.weighting, names),
            hooks=(CoTraining(OnlineRole(peer=peer.name, round=round_, learns_from=tuple(teachers),
                                         publishes=peer.name in taught, refresh_every=online.refresh_every,
                                         max_staleness=online.max_staleness, timeout_s=online.start_timeout_s)),),
            **common)
            for round_, seed in enumerate(cfg.run.seeds)]
        alone = [StudentJob(phase=online_phase(peer.name, seed, False), seed=seed,
                            init_seed=seed + INIT_SEED_STRIDE * index, terms=preset_terms("ce", 1.0),
                            use_teachers=False, **common)
                 for seed in cfg.run.seeds] if cfg.run.baseline else []
        jobs[peer.name] = mutual + alone
    return jobs


# --- the run regime -------------------------------------------------------------------------------
class CoTrainingRegime:
    name = "co-training"

    def active(self, cfg: Any) -> bool:
        return cfg.online is not None

    def plan(self, ctx: Any) -> dict[str, list[StudentJob]]:
        """Serve every peer that teaches another as a live teacher, and plan each peer's phases;
        rounds that finished before a restart are announced, so that peers do not wait for them."""
        import ray

        from teachers import resolve_model

        cfg, dataset, orchestrator = ctx.cfg, ctx.dataset, ctx.orchestrator
        online = cfg.online
        specs = {p.name: (p.model or cfg.student.model) for p in online.peers}
        taught = sorted({t for p in online.peers for t in online.teachers_of(p.name)})
        ctx.console.print(f"peers: serving {', '.join(taught)} as live teachers (weights refreshed every "
                          f"{online.refresh_every} steps, staleness at most {online.max_staleness} steps)")
        ray.get(orchestrator.start_peers.remote(list(specs), [{"name": name, "model": specs[name].model_dump()}
                                                              for name in taught]))
        models = {name: resolve_model(spec, in_features=dataset.in_features, num_classes=dataset.num_classes,
                                      allowed_modules=cfg.run.allowed_factory_modules) for name, spec in specs.items()}
        planned = online_jobs(cfg, ctx.methods[""], models, ctx.control)
        ray.get([orchestrator.finish_round.remote(job.hook(CoTraining).role.peer, job.hook(CoTraining).role.round)
                 for jobs in planned.values() for job in jobs if job.hook(CoTraining) and job.phase in ctx.done])
        return planned

    def results(self, cfg: Any, phases: dict[str, dict[str, Any]],
                teachers: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
        rows = online_rows(phases, [p.name for p in cfg.online.peers], cfg.run.seeds)
        return rows, "".join(f"{line}.\n" for line in online_gain_lines(rows))


REGIME = CoTrainingRegime()


# --- results --------------------------------------------------------------------------------------
MODES = {True: "mutual", False: "alone"}


def online_rows(phases: dict[str, dict[str, Any]], peers: list[str], seeds: list[int]) -> list[dict[str, Any]]:
    """One row per peer and mode that has finished phases (kind `mutual:<peer>` / `alone:<peer>`)."""
    rows = []
    for peer in peers:
        for mutual, mode in MODES.items():
            runs = [phases[p] for p in (online_phase(peer, s, mutual) for s in seeds) if p in phases]
            if not runs:
                continue
            mean, std = mean_std([r["test_accuracy"] for r in runs])
            rows.append({"model": f"peer {peer} ({'with its peers' if mutual else 'alone'})", "kind": f"{mode}:{peer}",
                         "metric": "test_accuracy", "score_mean": mean, "score_std": std, "seeds": len(runs),
                         "parameters": runs[0]["parameters"], "wall_s": statistics.fmean(r["train_s"] for r in runs),
                         "note": ", ".join(f"{r['test_accuracy']:.4f}" for r in runs) + _staleness_note(runs)})
    return rows


def _staleness_note(runs: list[dict[str, Any]]) -> str:
    if not all("online_max_staleness" in r for r in runs):
        return ""
    return (f"; staleness at most {max(r['online_max_staleness'] for r in runs)} steps, "
            f"{statistics.fmean(r['online_publications'] for r in runs):.0f} publications, "
            f"waited {sum(r['online_blocked_s'] for r in runs):.1f}s")


def online_gain_lines(rows: list[dict[str, Any]]) -> list[str]:
    """Per peer: accuracy points gained by training with its peers over training alone."""
    by_kind = {r["kind"]: r for r in rows}
    lines = []
    for kind, row in by_kind.items():
        mode, _, peer = kind.partition(":")
        alone = by_kind.get(f"alone:{peer}")
        if mode == "mutual" and alone is not None:
            lines.append(f"peer {peer}: {(row['score_mean'] - alone['score_mean']) * 100:+.2f} accuracy points with its "
                         f"peers over alone")
    return lines
