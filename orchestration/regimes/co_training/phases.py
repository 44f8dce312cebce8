"""The phases of a co-training run and its run regime (serve the peers, plan each peer's trainer)."""

from __future__ import annotations

from typing import Any, Optional

from cluster import online_phase
from orchestration.regimes.born_again import INIT_SEED_STRIDE
from orchestration.regimes.co_training.results import online_gain_lines, online_rows
from orchestration.regimes.co_training.worker import CoTraining, OnlineRole
from students import RunControl, StudentJob, Term, Weighting, preset_terms
from teachers import ResolvedModel, peer_teacher_name


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
