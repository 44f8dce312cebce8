"""A token-input teacher is admitted only with the run's tokenizer."""

from __future__ import annotations

from teachers.errors import IncompatibleTeacherError


def check_tokenizer(teacher: str, teacher_hash: str, expected_hash: str, data_tokenizer: str,
                    teacher_vocab: int | None = None, expected_vocab: int | None = None) -> None:
    """Refuse a token-input teacher that would read the run's token ids as other words."""
    if expected_hash and teacher_hash != expected_hash:
        sizes = lambda n: f"{n} tokens, " if n else ""  # noqa: E731
        raise IncompatibleTeacherError(
            f"teacher {teacher!r} was refused: its tokenizer ({sizes(teacher_vocab)}vocabulary hash "
            f"{teacher_hash or 'none'}) differs from the run's data.tokenizer {data_tokenizer!r} "
            f"({sizes(expected_vocab)}hash {expected_hash}); the token ids the students send would mean other "
            f"words to it. Give the teacher the run's tokenizer (model.kwargs.tokenizer). The run goes on "
            f"without it.")
