"""Streaming top-K per neuron, with the per-token activations of the kept excerpts.

Memory is O(neurons x K x window), whatever the corpus size: each batch is merged into the
running lists and dropped. The lists are kept unsorted: a batch's winners take the slots of the
entries they evict, so a merge copies only the (few) incoming excerpts' activations, and only the
neurons whose list the batch can change are touched. Sorting happens once, when read.
"""

import torch


class RunningTopK:
    """Per neuron, the K excerpts with the largest (or smallest) score seen so far."""

    def __init__(self, n_neurons: int, k: int, window: int, largest: bool = True, device: str = "cpu") -> None:
        self.k, self.largest = k, largest
        empty = float("-inf") if largest else float("inf")
        self._values = torch.full((n_neurons, k), empty, device=device)  # (D, K), unsorted
        self._indices = torch.full((n_neurons, k), -1, dtype=torch.long, device=device)  # (D, K)
        self._activations = torch.zeros((n_neurons, k, window), device=device)  # (D, K, T)

    def update(self, scores: torch.Tensor, activations: torch.Tensor, excerpt_indices: torch.Tensor) -> None:
        """Merge a batch: `scores` (B, D), `activations` (B, T, D) float32, `excerpt_indices` (B,)."""
        worst = self._values.amin(dim=1) if self.largest else self._values.amax(dim=1)  # (D,)
        beats = scores > worst if self.largest else scores < worst  # (B, D)
        rows = beats.any(dim=0).nonzero().squeeze(1)  # neurons whose list changes
        if rows.numel() == 0:
            return
        k = self.k
        candidates = torch.cat([self._values[rows], scores[:, rows].T], dim=1)  # (R, K + B)
        winners = torch.zeros_like(candidates, dtype=torch.bool)
        winners.scatter_(1, candidates.topk(k, dim=1, largest=self.largest, sorted=False).indices, True)
        # As many kept entries lose as batch entries win, row by row; `nonzero` lists both in
        # row-major order, so the i-th evicted slot pairs with the i-th incoming excerpt, in the
        # same row: one neuron index serves both sides.
        evicted_row, evicted_slot = (~winners[:, :k]).nonzero(as_tuple=True)
        incoming_batch = winners[:, k:].nonzero(as_tuple=True)[1]
        neuron = rows[evicted_row]
        self._values[neuron, evicted_slot] = scores[incoming_batch, neuron]
        self._indices[neuron, evicted_slot] = excerpt_indices[incoming_batch]
        self._activations[neuron, evicted_slot] = activations[incoming_batch, :, neuron]

    def _order(self) -> torch.Tensor:
        return self._values.argsort(dim=1, descending=self.largest, stable=True)  # (D, K)

    @property
    def values(self) -> torch.Tensor:
        """(D, K) scores, best first."""
        return self._values.gather(1, self._order())

    @property
    def indices(self) -> torch.Tensor:
        """(D, K) excerpt index (position in the corpus order) of each kept excerpt, best first;
        -1 marks an empty slot."""
        return self._indices.gather(1, self._order())

    @property
    def activations(self) -> torch.Tensor:
        """(D, K, T) per-token activations of each kept excerpt, best first, float32."""
        order = self._order()
        return self._activations.gather(1, order.unsqueeze(-1).expand(-1, -1, self._activations.shape[-1]))
