"""How a run is shaped by its regime, on the driver.

Two kinds of regime plug in:
- a **run regime** plans all of a run's phases and writes its results table
  (`RunRegime`): plain distillation (`orchestration.phases.PLAIN`), continual tasks
  (`orchestration.regimes.continual.REGIME`), co-training peers
  (`orchestration.regimes.co_training.REGIME`). `orchestration.run.REGIMES` lists them; the
  first whose `active(cfg)` holds shapes the run.
- a **method regime** adds worker hooks to the phases of the KD methods that ask for it
  (born-again, adversarial generator, quantized, speculative): `orchestration.phases.METHOD_HOOKS`.

`docs/architecture.md` says how to add either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

from rich.console import Console

from students import RunControl, StudentJob
from teachers import ResolvedModel


@dataclass
class RunContext:
    """What a regime may use to plan the phases of a run.

    Args:
        cfg: the validated run config.
        dataset: the run's dataset (`ingest.loading.Dataset`).
        methods: the checked terms of every KD method ("" for `distill.terms`).
        student_model: the student as the factory builds it.
        orchestrator: the run's orchestrator actor (driver-side calls only).
        control: the run control the workers use (`RayRunControl`).
        done: the phases that finished before (state.json), by name.
        teachers: the deployed teachers' result rows, by name.
        stores: offline mode: each teacher's store folder.
        console: the driver's console.
    """

    cfg: Any
    dataset: Any
    methods: dict[str, list]
    student_model: ResolvedModel
    orchestrator: Any
    control: RunControl
    done: dict[str, dict[str, Any]]
    teachers: dict[str, dict[str, Any]] = field(default_factory=dict)
    stores: dict[str, str] = field(default_factory=dict)
    console: Optional[Console] = None


class RunRegime(Protocol):
    name: str

    def active(self, cfg: Any) -> bool:
        """Whether this regime shapes a run of `cfg`."""

    def plan(self, ctx: RunContext) -> dict[str, list[StudentJob]]:
        """Every phase, by trainer ("" when one worker group trains them all, in order)."""

    def results(self, cfg: Any, phases: dict[str, dict[str, Any]],
                teachers: dict[str, dict[str, Any]]) -> tuple[list[dict[str, Any]], str]:
        """The results table's rows and the markdown that follows it."""


@dataclass(frozen=True)
class MethodPhase:
    """One phase of a plain run as a method regime sees it.

    Args:
        cfg: the run config.
        method: the KD method's name ("" for `distill.terms`), None for the no-KD baseline.
        seed: the phase's seed.
    """

    cfg: Any
    method: Optional[str]
    seed: int

    @property
    def method_cfg(self) -> Any:
        """The method's section of `distill.methods` (None for `distill.terms` and the baseline)."""
        return (self.cfg.distill.methods or {}).get(self.method) if self.method else None
