"""Tokenizers: the loader every side uses (a model folder, `pkg:<package>/<folder>`, or a hub
id where the cluster has internet) and the hash that tells two tokenizers apart by content."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

from cluster import fetch_file, fetch_folder, is_uri
from ingest.gguf_folder import gguf_folder, is_gguf

PACKAGE_PREFIX = "pkg:"


def resolve_model_dir(path: str) -> str:
    """`pkg:<package>/<sub/folder>` -> that folder of the installed package; a local folder
    -> its absolute path; a GGUF file (local or `pkg:`) -> the folder converted from it once per
    node (`ingest.gguf_folder`); a URI folder (s3://, gs://, ...) -> its copy fetched once per
    node; anything else is returned as is (a hub id)."""
    if path.startswith(PACKAGE_PREFIX):
        package, _, sub = path[len(PACKAGE_PREFIX):].partition("/")
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError(f"model path {path!r}: Python package {package!r} is not installed "
                                    f"(pip install it in every node's environment)")
        folder = Path(list(spec.submodule_search_locations)[0]) / sub
        if is_gguf(str(folder)):
            return gguf_folder(str(folder))
        if not folder.is_dir():
            raise FileNotFoundError(f"model path {path!r}: {folder} does not exist")
        return str(folder)
    if is_uri(path):  # object storage: fetched once per node (a GGUF file converted after)
        return gguf_folder(fetch_file(path)) if is_gguf(path) else fetch_folder(path)
    local = Path(path).expanduser()
    if is_gguf(str(local)):
        return gguf_folder(str(local))
    return str(local.resolve()) if local.is_dir() else path


def load_tokenizer(path: str):
    """The fast tokenizer of a model folder or hub id."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model_dir(path), use_fast=True)


def tokenizer_hash(tokenizer) -> str:
    """What makes two tokenizers interchangeable, by content (12 hex digits): their vocabulary,
    lower-casing and which ids are bos, eos and pad. Two copies of one tokenizer in different
    folders have the same hash."""
    vocab = json.dumps(sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]))
    lowercase = bool(getattr(tokenizer, "do_lower_case", False))
    specials = [getattr(tokenizer, f"{name}_token_id", None) for name in ("bos", "eos", "pad")]
    return hashlib.sha256(f"{vocab}|lower={lowercase}|specials={specials}".encode()).hexdigest()[:12]
