"""Errors raised by teacher backends, deployments and the TeacherClient."""

from cluster import DistilleryError


class SoftTargetError(DistilleryError):
    """A soft-target record failed validation (names the teacher and the batch)."""


class TeacherUnavailableError(DistilleryError):
    """A teacher did not answer in time or its endpoint is gone."""


class NoTeacherError(TeacherUnavailableError):
    """A KD student has no teacher left to learn from (and the config says not to wait)."""


class IncompatibleTeacherError(DistilleryError):
    """A teacher's output space does not match the student's."""


class SoftTargetDecodeError(SoftTargetError):
    """Bytes from the wire or the store are not a valid soft-target record."""


class TeacherAuthError(DistilleryError):
    """A teacher endpoint refused the credentials (token or certificate)."""


class SoftTargetStoreError(DistilleryError):
    """The offline soft-target store is missing, incomplete or stale for this run."""
