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


class Scratch:
    """Reused buffers for per-batch temporaries, shareable by the layers of one model: a fresh
    12 MB temporary per pass costs more in page faults than the arithmetic on it."""

    def __init__(self) -> None:
        self._buffer: torch.Tensor | None = None

    def like(self, tensor: torch.Tensor) -> torch.Tensor:
        """An uninitialised buffer of `tensor`'s shape, dtype and device."""
        needed = tensor.numel()
        if self._buffer is None or self._buffer.numel() < needed or self._buffer.dtype != tensor.dtype:
            self._buffer = torch.empty(needed, dtype=tensor.dtype, device=tensor.device)
        return self._buffer[:needed].view(tensor.shape)


class RunningStats:
    """Mean and variance from sums of shifted values, plus max, min and the count of positive
    values.

    Each batch adds `sum(x - c)` and `sum((x - c)^2)` per neuron, where the shift `c` is the first
    batch's mean: with `c` near the mean, `E[(x-c)^2] - E[x-c]^2` does not cancel (the shifted-data
    algorithm), and it takes one pass fewer than centring every batch on its own mean. Within a
    batch (a few thousand values) the sums are float32, accurate to ~1e-7 relative; across batches
    they add up in float64. The first batch is part of the data, so `(c - mean)^2 <= variance x
    batches`: the relative error of the variance is at most ~1e-7 x (1 + batches), and ~1e-7 when
    the first batch is typical."""

    def __init__(self, n_neurons: int, device: str = "cpu", scratch: Scratch | None = None) -> None:
        self.count = 0
        self.shift: torch.Tensor | None = None
        """(D,) the first batch's mean, in the activations' dtype."""
        self.shifted_sum = torch.zeros(n_neurons, dtype=torch.float64, device=device)
        self.shifted_squares = torch.zeros(n_neurons, dtype=torch.float64, device=device)
        self.max = torch.full((n_neurons,), float("-inf"), device=device)
        self.min = torch.full((n_neurons,), float("inf"), device=device)
        self.positive = torch.zeros(n_neurons, dtype=torch.long, device=device)
        self._scratch = Scratch() if scratch is None else scratch

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
        tokens = (0, 1)
        # Three elementwise passes into a reused scratch buffer, each followed by a native
        # reduction: no temporaries, and no BLAS call, whose thread pool would fight the
        # elementwise pool on a small CPU (a GEMV after an elementwise op measured 8x slower
        # than either alone).
        if self.shift is None:
            self.shift = activations.mean(dim=tokens)
        scratch = self._scratch.like(activations)
        torch.sub(activations, self.shift, out=scratch)
        self.shifted_sum += scratch.sum(dim=tokens).double()
        torch.mul(scratch, scratch, out=scratch)
        self.shifted_squares += scratch.sum(dim=tokens).double()
        torch.gt(activations, 0, out=scratch)  # counts of up to 2^24 per batch are exact in float32
        self.positive += scratch.sum(dim=tokens).round().long()
        self.count += activations.shape[0] * activations.shape[1]
        self.max = torch.maximum(self.max, excerpt_max.amax(dim=0))
        self.min = torch.minimum(self.min, excerpt_min.amin(dim=0))

    def result(self) -> NeuronStatistics:
        if self.count == 0:
            raise ValueError("no activations were added")
        assert self.shift is not None
        offset = self.shifted_sum / self.count  # mean - shift
        return NeuronStatistics(
            mean=self.shift.double() + offset,
            variance=(self.shifted_squares / self.count - offset**2).clamp(min=0),
            max=self.max,
            min=self.min,
            frac_positive=self.positive.double() / self.count,
            n_tokens=self.count,
        )
