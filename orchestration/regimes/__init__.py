"""The regimes of a run, one module each: what a regime adds to the phases it plans and to a
worker's loop (its `students.hooks.PhaseHook`s). `docs/architecture.md` says how to add one."""
