"""The default subject model and its tokenizer load offline from the shipped GGUF file."""

import dataclasses
import shutil
from pathlib import Path

import pytest
import torch

from neuronatlas.adapters import models
from neuronatlas.errors import InputError


@pytest.fixture(scope="module")
def fresh_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-cache")


def test_smollm2_loads_from_gguf_then_from_the_safetensors_cache(
    fresh_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NEURONATLAS_CACHE", str(fresh_cache))
    source = models.resolve_model("smollm2-135m")
    assert source.checksum == models.SHIPPED["smollm2-135m"].sha256
    assert source.gguf_file == "SmolLM2-135M-Instruct.Q4_1.gguf"

    first = models.load_model(source)
    cached = models.cached_folder(source) / "model"
    assert (cached / "model.safetensors").is_file()
    assert first.config.num_hidden_layers == 30
    assert first.config.intermediate_size == 1536
    assert first.model.layers[0].mlp.down_proj.in_features == 1536

    second = models.load_model(source)
    assert Path(second.name_or_path) == cached  # loaded from the cache, not the GGUF
    tokens = torch.tensor([[19556, 905, 28, 451, 314]])  # "Hello world, this is"
    with torch.no_grad():
        assert torch.equal(first(tokens).logits, second(tokens).logits)
        next_token = int(second(tokens).logits[0, -1].argmax())
    assert next_token < 49152


def test_tokenizer_round_trips_and_is_cached(fresh_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NEURONATLAS_CACHE", str(fresh_cache))
    tokenizer = models.open_tokenizer("smollm2-135m")
    assert (models.cached_folder(tokenizer.source) / "tokenizer" / "tokenizer.json").is_file()
    assert tokenizer.vocab_size == 49152
    text = "Hello world, this is Émile's café."
    ids = tokenizer.encode([text])[0]
    assert ids[:2] == [19556, 905]
    assert "".join(tokenizer.token_strings[i] for i in ids) == text
    assert tokenizer.identity == f"smollm2-135m@sha256:{models.SHIPPED['smollm2-135m'].sha256}"


def test_checksum_mismatch_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("NEURONATLAS_CACHE", str(tmp_path))
    wrong = dataclasses.replace(models.SHIPPED["smollm2-135m"], sha256="0" * 64)
    monkeypatch.setitem(models.SHIPPED, "smollm2-135m", wrong)
    with pytest.raises(InputError, match=r"has sha256 b179c952.*expected 0000"):
        models.resolve_model("smollm2-135m")


def test_unknown_model_and_unreadable_folder(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="model 'gpt-7': not a shipped model"):
        models.resolve_model("gpt-7")
    (tmp_path / "notamodel").mkdir()
    with pytest.raises(InputError, match="not a Hugging Face model folder"):
        models.resolve_model(str(tmp_path / "notamodel"))


def test_local_model_folder(tmp_path: Path, fresh_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A local Hugging Face folder (here: a tiny random Llama with SmolLM2's tokenizer)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    monkeypatch.setenv("NEURONATLAS_CACHE", str(fresh_cache))
    shipped = models.open_tokenizer("smollm2-135m")
    folder = tmp_path / "tiny-llama"
    config = LlamaConfig(
        vocab_size=49152, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2
    )
    LlamaForCausalLM(config).save_pretrained(folder)
    shutil.copytree(models.cached_folder(shipped.source) / "tokenizer", folder, dirs_exist_ok=True)

    tokenizer = models.open_tokenizer(str(folder))
    assert tokenizer.source.slug == "tiny-llama"
    assert tokenizer.encode(["Hello world"]) == shipped.encode(["Hello world"])
    model = models.load_model(models.resolve_model(str(folder)))
    assert model.config.num_hidden_layers == 2
