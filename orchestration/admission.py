"""Whether a teacher fits a run's student, checked before it is trained and again once it is
deployed: the same output space (classes, or vocabulary and tokenizer); a refusal is an
event of the run and an `IncompatibleTeacherError` that says what to change."""

from __future__ import annotations

from typing import Any, Callable, Optional

from teachers import IncompatibleTeacherError, TeacherConfig


class TeacherAdmission:
    """Args:
        run: the run name (for messages).
        dataset: the run's dataset as the teachers read it.
        tokenizer: the run's `data.tokenizer`.
        event: records a run event (`event(kind, **fields)`).
    """

    def __init__(self, run: str, dataset: Any, tokenizer: Optional[str], event: Callable[..., None]):
        self.run, self.dataset, self.tokenizer, self.event = run, dataset, str(tokenizer), event
        self.output_space = dataset.output_space

    def check_tokenizer(self, name: str, teacher_hash: str, teacher_vocab: Optional[int], on_refusal) -> None:
        """A token-input teacher must split text exactly as the run's tokenizer (data.tokenizer)."""
        from teachers import check_tokenizer

        try:
            check_tokenizer(name, teacher_hash, self.dataset.tokenizer_hash, str(self.tokenizer),
                            teacher_vocab, self.dataset.num_classes if self.dataset.kind == "lm" else None)
        except IncompatibleTeacherError:
            on_refusal()
            self.event("teacher_refused", teacher=name, tokenizer_hash=teacher_hash)
            raise

    def check_declared_classes(self, configs: list[TeacherConfig]) -> None:
        """A classifier teacher that declares another number of classes (`model.kwargs.num_classes`)
        is refused before it is trained or deployed (a deployed teacher is checked again)."""
        if not self.output_space.startswith("classes:"):
            return
        for cfg in configs:
            declared = cfg.model.kwargs.get("num_classes")
            if declared is not None and f"classes:{declared}" != self.output_space:
                self.refuse_output_space(cfg.name, f"classes:{declared}")

    def refuse_output_space(self, name: str, output_space: str) -> None:
        self.event("teacher_refused", teacher=name, output_space=output_space)
        raise IncompatibleTeacherError(
            f"teacher {name!r} was refused: its output space is {output_space} but the student of run "
            f"{self.run!r} predicts {self.output_space}; a teacher must score the same classes as the student "
            f"(check model.kwargs.num_classes). The run goes on without it.")

    def check_model_tokenizers(self, configs: list[TeacherConfig]) -> None:
        """Language-model teachers name their tokenizer: refuse a mismatch before training or
        deploying them (the deployed teacher is checked again through its description)."""
        if self.dataset.kind != "lm":
            return
        from ingest import load_tokenizer, tokenizer_hash

        for cfg in configs:
            path = cfg.model.kwargs.get("tokenizer")
            if path:
                tokenizer = load_tokenizer(str(path))
                self.check_tokenizer(cfg.name, tokenizer_hash(tokenizer), len(tokenizer), on_refusal=lambda: None)
