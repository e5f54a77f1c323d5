"""Records of one layer: which excerpts each neuron keeps, of which kind, in which split.

Kinds (docs/method.md §1): `top` (largest maximum activation), `bottom` (smallest minimum: gated MLPs
fire in both directions) and `random` (a seeded sample shared by all neurons). Splits are
disjoint and interleaved: top and bottom ranks go round-robin to train / calibration / valid /
test, random ones to calibration / valid / test. An excerpt is kept once per neuron: bottom skips
the neuron's top excerpts, random skips both, so no excerpt is in two splits of one neuron.
"""

from dataclasses import dataclass

import numpy as np
import torch

TOP_SPLITS = ("train", "calibration", "valid", "test")
RANDOM_SPLITS = ("calibration", "valid", "test")
assert TOP_SPLITS[1:] == RANDOM_SPLITS  # `KindRecords.split_code` counts on it


@dataclass
class KindRecords:
    """Records of one kind for every neuron of a layer, flattened row by row."""

    kind: str
    neuron: np.ndarray
    """(R,) int32 neuron of each row."""
    rank: np.ndarray
    """(R,) rank within the neuron's records of this kind (0 = best)."""
    excerpt_index: np.ndarray
    """(R,) position of the excerpt in the extraction's corpus order."""
    activations: np.ndarray
    """(R, T) float32 per-token activations."""

    @property
    def split(self) -> np.ndarray:
        """(R,) split name of each row."""
        return np.array(TOP_SPLITS, dtype=object)[self.split_code]

    @property
    def split_code(self) -> np.ndarray:
        """(R,) int8 position of each row's split in `TOP_SPLITS` (which holds every split)."""
        if self.kind == "random":
            return (1 + self.rank % len(RANDOM_SPLITS)).astype(np.int8)  # calibration, valid, test
        return (self.rank % len(TOP_SPLITS)).astype(np.int8)


def random_pool(n_excerpts: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Excerpt indices sampled without replacement, in draw order (the shared random sample)."""
    return rng.choice(n_excerpts, size=min(size, n_excerpts), replace=False)


def first_k_not_in(candidates: torch.Tensor, excluded: torch.Tensor, k: int) -> torch.Tensor:
    """(D, C) mask keeping, per row, the first `k` candidates absent from that row of `excluded`.

    `candidates` (D, C) and `excluded` (D, E) hold excerpt indices; -1 marks an empty slot.
    """
    clash = (candidates.unsqueeze(2) == excluded.unsqueeze(1)).any(dim=2)  # (D, C)
    usable = ~clash & (candidates >= 0)
    return usable & (usable.cumsum(dim=1) <= k)


def kind_records(kind: str, indices: torch.Tensor, activations: torch.Tensor, keep: torch.Tensor) -> KindRecords:
    """Flatten the kept slots of (D, C) `indices` / (D, C, T) `activations` into rows."""
    neuron, slot = keep.nonzero(as_tuple=True)
    rank = keep.cumsum(dim=1)[neuron, slot] - 1
    return KindRecords(
        kind=kind,
        neuron=neuron.numpy().astype(np.int32),
        rank=rank.numpy().astype(np.int16),
        excerpt_index=indices[neuron, slot].numpy(),
        activations=activations[neuron, slot].numpy(),
    )


def layer_records(
    top_indices: torch.Tensor,
    top_activations: torch.Tensor,
    bottom_indices: torch.Tensor,
    bottom_activations: torch.Tensor,
    pool: np.ndarray,
    pool_activations: torch.Tensor,
    k: int,
    random_k: int,
) -> list[KindRecords]:
    """Top, bottom and random records of every neuron of one layer, disjoint per neuron.

    Shapes: top (D, K) / (D, K, T); bottom candidates (D, C) / (D, C, T) with C >= K;
    `pool` (P,) excerpt indices with `pool_activations` (P, T, D).
    """
    n_neurons = top_indices.shape[0]
    top = kind_records("top", top_indices, top_activations, top_indices >= 0)
    bottom_keep = first_k_not_in(bottom_indices, top_indices, k)
    bottom = kind_records("bottom", bottom_indices, bottom_activations, bottom_keep)
    chosen_bottom = torch.where(bottom_keep, bottom_indices, torch.full_like(bottom_indices, -1))
    pool_indices = torch.as_tensor(pool, dtype=torch.long).expand(n_neurons, -1)  # (D, P)
    random_keep = first_k_not_in(pool_indices, torch.cat([top_indices, chosen_bottom], dim=1), random_k)
    random = kind_records("random", pool_indices, pool_activations.permute(2, 0, 1), random_keep)
    return [top, bottom, random]
