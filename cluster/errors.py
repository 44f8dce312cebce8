"""Exception types shared by every layer. Messages say what, where, and what to do."""


class DistilleryError(Exception):
    """Base class of every error Distillery raises on purpose."""


class ConfigError(DistilleryError, ValueError):
    """A config file or a config value is wrong.

    Args:
        source: the file (or "<request>") the config came from.
        problems: one line per problem, each starting with the field path.
    """

    def __init__(self, source: str, problems: list[str]):
        self.source = source
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid config {source}:\n{lines}")


class FactoryError(DistilleryError):
    """A model factory could not be resolved or refused by the allow-list."""


class RunNotFoundError(DistilleryError):
    """No running job with that run name is reachable on the Ray cluster."""
