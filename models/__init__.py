"""Model builders that teachers and students both use: the torch model zoo, Hugging Face
encoders and causal language models, and a model's version from its weights files. Configs
name them as factories (`models.zoo:mlp`, `models.hf:sentence_encoder`,
`models.hf_lm:causal_lm`). It imports `cluster` and `ingest` only.

`__all__` names what other packages use (loaded on first use: `cluster.lazy`); the rest is
private to the package.
"""

from cluster import lazy_exports

_EXPORTS = {
    "checkpoint_version": "version",
    "count_parameters": "zoo",
    "file_version": "version",
}

__all__ = ["checkpoint_version", "count_parameters", "file_version"]


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
