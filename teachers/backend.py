"""The torch teacher backend: a module from an allowed factory, weights from safetensors."""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import torch
from safetensors.torch import load_model

from cluster import DEFAULT_ALLOWED_MODULES, ModelSpec, build_module, is_uri, resolve_factory
from models import file_version


@dataclass(frozen=True)
class ResolvedModel:
    """A model spec with the dataset's shapes filled in: everything a process needs to build it."""

    factory: str
    kwargs: dict[str, Any]
    allowed_modules: tuple[str, ...] = DEFAULT_ALLOWED_MODULES

    def build(self) -> torch.nn.Module:
        return build_module(self.factory, self.kwargs, self.allowed_modules)


def resolve_model(spec: ModelSpec, *, in_features: int, num_classes: int,
                  allowed_modules: Iterable[str] = DEFAULT_ALLOWED_MODULES) -> ResolvedModel:
    kwargs = {"in_features": in_features, "num_classes": num_classes, **spec.kwargs}
    return ResolvedModel(spec.factory, kwargs, tuple(allowed_modules))


def loading_kwargs(factory: str, kwargs: dict[str, Any], allowed_modules: Iterable[str], dtype: str) -> dict[str, Any]:
    """`kwargs` with the teacher's `dtype` for a factory that loads pretrained weights in a dtype
    of its own choosing (a `dtype` argument, e.g. `models.hf_lm:causal_lm`), unless they name one:
    the weights then load in the dtype the teacher runs in, with no float32 copy first."""
    if "dtype" in kwargs:
        return kwargs
    takes_dtype = "dtype" in inspect.signature(resolve_factory(factory, allowed_modules)).parameters
    return {**kwargs, "dtype": dtype} if takes_dtype else kwargs


def load_teacher(model: ResolvedModel, weights_path: str | Path | None) -> torch.nn.Module:
    """Build the module and load its weights (safetensors only: loading runs no code). Without
    a weights file the factory loads its own pretrained weights (`models.hf`)."""
    module = model.build()
    if not weights_path:
        return module.eval()
    missing, unexpected = load_model(module, str(weights_path), strict=False)  # tied weights stored once
    if missing or unexpected:
        raise ValueError(f"weights {weights_path} do not fit {model.factory}: "
                         f"missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}")
    return module.eval()


def declared_version(model: ResolvedModel) -> str:
    """A pretrained model's version without loading it: its checkpoint's metadata
    (`models.checkpoint_version`) and the layers it keeps; a model without a `path`
    (built from a config) is built to ask it."""
    from ingest import is_gguf, resolve_model_dir
    from models import checkpoint_version

    path = model.kwargs.get("path")
    if not path:
        return str(getattr(model.build(), "model_version", "pretrained"))
    layers = model.kwargs.get("layers")
    suffix = f"-layers{'-'.join(map(str, layers))}" if layers else ""
    local = is_gguf(str(path)) or not is_uri(str(path))  # a URI folder's metadata is read where it lies
    return checkpoint_version(resolve_model_dir(str(path)) if local else str(path)) + suffix


def model_version(module: torch.nn.Module, weights_path: str | Path | None) -> str:
    """The weights file's version, or the pretrained module's own (`models.hf`)."""
    return file_version(weights_path) if weights_path else str(getattr(module, "model_version", "pretrained"))


def model_input(inputs: torch.Tensor, device: Any, dtype: torch.dtype) -> torch.Tensor:
    """Inputs on `device`, features cast to the model's `dtype` (a bf16 teacher takes bf16
    features), token ids as they are."""
    return inputs.to(device=device, dtype=dtype) if inputs.is_floating_point() else inputs.to(device)


def dummy_inputs(module: torch.nn.Module, rows: int, in_features: int, device: Any = None) -> torch.Tensor:
    """Zeros a module takes as input for a shape probe: token ids for a module that declares
    `input_dtype = torch.long` (a text classifier), features otherwise."""
    return torch.zeros(rows, in_features, dtype=getattr(module, "input_dtype", torch.float32), device=device)


def output_space_of(module: torch.nn.Module, in_features: int) -> tuple[str, int]:
    """Run one dummy forward to learn the module's output space id and size: `classes:C` for
    classifiers, `embedding:d` for sentence encoders, `tokens:V:<tokenizer hash>` for causal
    language models (which say it themselves: no forward)."""
    if hasattr(module, "output_space"):
        return str(module.output_space), int(module.vocab_size)
    with torch.no_grad():
        out = module.eval()(dummy_inputs(module, 2, in_features))
    if out.ndim != 2:
        raise ValueError(f"a teacher must return logits or embeddings [B, C], got shape {tuple(out.shape)}")
    kind = getattr(module, "output_kind", "classes")
    suffix = f":{module.tokenizer_hash}" if kind == "tokens" else ""
    return f"{kind}:{out.shape[-1]}{suffix}", int(out.shape[-1])


class FeatureHooks:
    """Forward hooks that keep the outputs of named submodules from the last forward.

    Values are kept per thread: a Serve replica runs concurrent requests on several threads,
    and each forward must get its own features back.
    """

    def __init__(self, module: torch.nn.Module, names: Iterable[str], owner: str):
        modules = dict(module.named_modules())
        self._local = threading.local()
        for name in names:
            if name not in modules:
                known = [n for n in modules if n][:30]
                raise ValueError(f"{owner} has no submodule {name!r} to take features from; it has {known}")
            modules[name].register_forward_hook(self._keep(name))

    def _values(self) -> dict[str, torch.Tensor]:
        if not hasattr(self._local, "values"):
            self._local.values = {}
        return self._local.values

    def _keep(self, name: str):
        def hook(_module, _inputs, output):
            self._values()[name] = output[0] if isinstance(output, tuple) else output
        return hook

    def take(self) -> dict[str, torch.Tensor]:
        values = self._values()
        self._local.values = {}
        return values
