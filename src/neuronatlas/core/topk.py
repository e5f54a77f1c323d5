"""Streaming top-K per neuron, with the per-token activations of the kept excerpts.

Memory is O(neurons x K x window), whatever the corpus size: each batch is merged into the
running lists and dropped. Only the neurons whose list a batch can change are touched, so the
merge costs little once the lists have filled.
"""

import torch


class RunningTopK:
    """Per neuron, the K excerpts with the largest (or smallest) score seen so far."""

    def __init__(self, n_neurons: int, k: int, window: int, largest: bool = True, device: str = "cpu") -> None:
        fill = float("-inf") if largest else float("inf")
        self.k, self.largest = k, largest
        self.values = torch.full((n_neurons, k), fill, device=device)
        """(D, K) scores, best first."""
        self.indices = torch.full((n_neurons, k), -1, dtype=torch.long, device=device)
        """(D, K) excerpt index (position in the corpus order) of each kept excerpt; -1 = empty."""
        self.activations = torch.zeros((n_neurons, k, window), device=device)
        """(D, K, T) per-token activations of each kept excerpt, float32."""

    def update(self, scores: torch.Tensor, activations: torch.Tensor, excerpt_indices: torch.Tensor) -> None:
        """Merge a batch: `scores` (B, D), `activations` (B, T, D) float32, `excerpt_indices` (B,)."""
        worst = self.values[:, -1]  # (D,)
        beats = scores > worst if self.largest else scores < worst  # (B, D)
        rows = beats.any(dim=0).nonzero().squeeze(1)  # neurons whose list changes
        if rows.numel() == 0:
            return
        k, window = self.k, activations.shape[1]
        candidates = torch.cat([self.values[rows], scores[:, rows].T], dim=1)  # (R, K + B)
        best = candidates.topk(k, dim=1, largest=self.largest, sorted=True)
        from_kept = best.indices < k  # (R, K)
        kept_slot = best.indices.clamp(max=k - 1)
        batch_slot = (best.indices - k).clamp(min=0)

        per_token = (-1, -1, window)
        kept_acts = self.activations[rows].gather(1, kept_slot.unsqueeze(-1).expand(*per_token))
        batch_acts = activations[:, :, rows].permute(2, 0, 1)  # (R, B, T)
        new_acts = batch_acts.gather(1, batch_slot.unsqueeze(-1).expand(*per_token))
        self.activations[rows] = torch.where(from_kept.unsqueeze(-1), kept_acts, new_acts)
        kept_index = self.indices[rows].gather(1, kept_slot)
        self.indices[rows] = torch.where(from_kept, kept_index, excerpt_indices[batch_slot])
        self.values[rows] = best.values
