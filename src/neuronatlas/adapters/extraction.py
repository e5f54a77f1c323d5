"""Run a subject model over excerpts and stream every MLP neuron's activations into running
top / bottom lists, a shared random sample and per-neuron statistics.

The neuron (docs/method.md §1): for gated MLPs (Llama, Qwen, Gemma, SmolLM) the input of `down_proj`,
`act(gate_proj(x)) * up_proj(x)`; for GPT-2 the output of the GELU. Only the model body runs (no
LM head), and the forward pass stops right after the last requested layer.
"""

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from neuronatlas.core.stats import RunningStats, Scratch
from neuronatlas.core.topk import RunningTopK
from neuronatlas.errors import InputError

log = logging.getLogger(__name__)


class _StopForwardError(Exception):
    """Raised by the last layer's hook: nothing after it is needed."""


@dataclass(frozen=True)
class MlpLayout:
    """Where a model's MLP neurons are."""

    body: Any
    """The module that runs the transformer without the LM head."""
    sites: list[Any]
    """Per layer, the module whose input (gated) or output (GELU) is the neuron activation."""
    reads_input: bool
    """True: a forward pre-hook reads the module's input; False: a forward hook its output."""
    d_mlp: int
    definition: str
    """The neuron definition, for manifests."""

    @property
    def n_layers(self) -> int:
        return len(self.sites)


def mlp_layout(model: Any) -> MlpLayout:
    """Locate the MLP neurons of a supported architecture, or raise an `InputError`."""
    body = getattr(model, "model", None)
    layers = getattr(body, "layers", None)
    if layers is not None and all(hasattr(layer.mlp, "down_proj") for layer in layers):
        sites = [layer.mlp.down_proj for layer in layers]
        definition = "input of mlp.down_proj: act(gate_proj(x)) * up_proj(x)"
        return MlpLayout(body, sites, True, sites[0].in_features, definition)
    transformer = getattr(model, "transformer", None)
    blocks = getattr(transformer, "h", None)
    if blocks is not None and all(hasattr(block.mlp, "act") for block in blocks):
        sites = [block.mlp.act for block in blocks]
        d_mlp = blocks[0].mlp.c_fc.weight.shape[1]  # GPT-2's Conv1D stores (in, out)
        return MlpLayout(transformer, sites, False, d_mlp, "output of mlp.act (GELU) of each GPT-2 block")
    raise InputError(f"model {type(model).__name__}: unsupported architecture (no gated MLP or GPT-2 blocks)")


def pick_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise InputError("--device cuda: no CUDA device is available")
    if requested not in ("cpu", "cuda"):
        raise InputError(f"--device {requested}: expected auto, cpu or cuda")
    return requested


def pick_dtype(requested: str, device: str) -> torch.dtype:
    """bf16 on CUDA by default, fp32 on the CPU; either on request."""
    choices = {"fp32": torch.float32, "float32": torch.float32, "bf16": torch.bfloat16, "bfloat16": torch.bfloat16}
    if requested == "auto":
        return torch.bfloat16 if device == "cuda" else torch.float32
    if requested not in choices:
        raise InputError(f"--dtype {requested}: expected auto, fp32 or bf16")
    return choices[requested]


@dataclass
class LayerAccumulator:
    """Everything kept for one layer while the corpus streams past."""

    top: RunningTopK
    bottom: RunningTopK
    pool_activations: torch.Tensor
    """(P, T, D) activations of the shared random sample's excerpts."""
    stats: RunningStats


@contextmanager
def _hooked(layout: MlpLayout, layers: list[int], consume: Callable[[int, torch.Tensor], None]) -> Iterator[None]:
    """Hooks that hand each requested layer's activations (B, T, D) to `consume` as soon as they
    are computed (still in cache, and freed before the next layer runs) and stop the forward pass
    after the last."""
    last = max(layers)

    def hook(layer: int, value: torch.Tensor) -> None:
        consume(layer, value)
        if layer == last:
            raise _StopForwardError

    handles = []
    for layer in layers:
        site = layout.sites[layer]
        if layout.reads_input:
            handles.append(site.register_forward_pre_hook(lambda _m, args, layer=layer: hook(layer, args[0])))
        else:
            handles.append(site.register_forward_hook(lambda _m, _a, out, layer=layer: hook(layer, out)))
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def extract(
    model: Any,
    token_ids: np.ndarray,
    layers: list[int],
    *,
    k: int,
    bottom_candidates: int,
    pool: np.ndarray,
    batch_size: int,
    device: str,
    on_batch: Callable[[int, int], None] | None = None,
) -> dict[int, LayerAccumulator]:
    """Stream `token_ids` (N, T) through the model once; return each layer's accumulators."""
    layout = mlp_layout(model)
    n_excerpts, window = token_ids.shape
    pool_slot = np.full(n_excerpts, -1)
    pool_slot[pool] = np.arange(len(pool))
    scratch = Scratch()  # one set of temporaries for all layers: they run one after another
    state = {
        layer: LayerAccumulator(
            top=RunningTopK(layout.d_mlp, k, window, largest=True, device=device),
            bottom=RunningTopK(layout.d_mlp, bottom_candidates, window, largest=False, device=device),
            pool_activations=torch.zeros((len(pool), window, layout.d_mlp), device=device),
            stats=RunningStats(layout.d_mlp, device=device, scratch=scratch),
        )
        for layer in layers
    }
    batch: dict[str, torch.Tensor] = {}

    def merge(layer: int, value: torch.Tensor) -> None:
        acts = value.float()  # (B, T, D)
        accumulator = state[layer]
        excerpt_max, excerpt_min = acts.amax(dim=1), acts.amin(dim=1)  # (B, D)
        accumulator.top.update(excerpt_max, acts, batch["excerpts"])
        accumulator.bottom.update(excerpt_min, acts, batch["excerpts"])
        accumulator.stats.update(acts, excerpt_max, excerpt_min)
        in_pool = batch["in_pool"]
        if in_pool.any():
            accumulator.pool_activations[batch["slots"][in_pool]] = acts[in_pool]

    with torch.inference_mode(), _hooked(layout, layers, merge):
        for start in range(0, n_excerpts, batch_size):
            ids = torch.as_tensor(token_ids[start : start + batch_size], dtype=torch.long, device=device)
            batch["excerpts"] = torch.arange(start, start + ids.shape[0], device=device)
            batch["slots"] = torch.as_tensor(pool_slot[start : start + ids.shape[0]], device=device)
            batch["in_pool"] = batch["slots"] >= 0
            with suppress(_StopForwardError):
                layout.body(input_ids=ids, use_cache=False)
            if on_batch is not None:
                on_batch(start + ids.shape[0], (start + ids.shape[0]) * window)
    return state
