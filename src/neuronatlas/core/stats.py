"""Per-neuron statistics over every token, accumulated batch by batch (float64)."""

from dataclasses import dataclass

import torch


@dataclass
class NeuronStatistics:
    """Final statistics of one layer's neurons, each a (D,) tensor."""

    mean: torch.Tensor
    variance: torch.Tensor
    """Population variance over all tokens."""
    max: torch.Tensor
    min: torch.Tensor
    frac_positive: torch.Tensor
    """Fraction of tokens with activation > 0."""
    n_tokens: int


class RunningStats:
    """Mean and variance by Chan's parallel merge (stable), plus max, min and positives."""

    def __init__(self, n_neurons: int, device: str = "cpu") -> None:
        self.count = 0
        self.mean = torch.zeros(n_neurons, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(n_neurons, dtype=torch.float64, device=device)
        self.max = torch.full((n_neurons,), float("-inf"), device=device)
        self.min = torch.full((n_neurons,), float("inf"), device=device)
        self.positive = torch.zeros(n_neurons, dtype=torch.float64, device=device)

    def update(self, activations: torch.Tensor) -> None:
        """Add a batch of activations (B, T, D)."""
        flat = activations.reshape(-1, activations.shape[-1])  # (B*T, D)
        values = flat.double()
        n_batch = values.shape[0]
        batch_mean = values.mean(dim=0)
        batch_m2 = ((values - batch_mean) ** 2).sum(dim=0)
        total = self.count + n_batch
        delta = batch_mean - self.mean
        self.mean += delta * (n_batch / total)
        self.m2 += batch_m2 + delta**2 * (self.count * n_batch / total)
        self.count = total
        self.max = torch.maximum(self.max, flat.max(dim=0).values)
        self.min = torch.minimum(self.min, flat.min(dim=0).values)
        self.positive += (flat > 0).sum(dim=0).double()

    def result(self) -> NeuronStatistics:
        if self.count == 0:
            raise ValueError("no activations were added")
        return NeuronStatistics(
            mean=self.mean,
            variance=self.m2 / self.count,
            max=self.max,
            min=self.min,
            frac_positive=self.positive / self.count,
            n_tokens=self.count,
        )
