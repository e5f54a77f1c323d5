"""Per-neuron statistics over every token, accumulated batch by batch."""

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
    """Mean and variance by Chan's parallel merge of per-batch moments (stable in float64 across
    batches), plus max, min and the count of positive values."""

    def __init__(self, n_neurons: int, device: str = "cpu") -> None:
        self.count = 0
        self.mean = torch.zeros(n_neurons, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(n_neurons, dtype=torch.float64, device=device)
        self.max = torch.full((n_neurons,), float("-inf"), device=device)
        self.min = torch.full((n_neurons,), float("inf"), device=device)
        self.positive = torch.zeros(n_neurons, dtype=torch.long, device=device)

    def update(
        self,
        activations: torch.Tensor,
        excerpt_max: torch.Tensor | None = None,
        excerpt_min: torch.Tensor | None = None,
    ) -> None:
        """Add a batch of activations (B, T, D); pass their per-excerpt max and min (B, D) when
        already computed (for the top and bottom lists) to save a pass."""
        excerpt_max = activations.amax(dim=1) if excerpt_max is None else excerpt_max
        excerpt_min = activations.amin(dim=1) if excerpt_min is None else excerpt_min
        flat = activations.reshape(-1, activations.shape[-1])  # (B*T, D)
        n_batch = flat.shape[0]
        # Within a batch (a few thousand values) float32 sums of values shifted by one of the
        # batch's own are accurate to ~1e-7 relative, like the activations themselves, whatever
        # their offset, and 4x cheaper than var_mean or float64; batches merge in float64, so
        # the error does not grow with the corpus.
        shift = flat[0]  # (D,)
        centred = flat - shift
        centred_mean = centred.mean(dim=0)
        batch_m2 = (centred - centred_mean).square().sum(dim=0).double()
        batch_mean = shift.double() + centred_mean.double()
        total = self.count + n_batch
        delta = batch_mean.double() - self.mean
        self.mean += delta * (n_batch / total)
        self.m2 += batch_m2 + delta**2 * (self.count * n_batch / total)
        self.count = total
        self.max = torch.maximum(self.max, excerpt_max.amax(dim=0))
        self.min = torch.minimum(self.min, excerpt_min.amin(dim=0))
        self.positive += (flat > 0).sum(dim=0, dtype=torch.int32)  # int32 sums bools 4x faster than int64

    def result(self) -> NeuronStatistics:
        if self.count == 0:
            raise ValueError("no activations were added")
        return NeuronStatistics(
            mean=self.mean,
            variance=self.m2 / self.count,
            max=self.max,
            min=self.min,
            frac_positive=self.positive.double() / self.count,
            n_tokens=self.count,
        )
