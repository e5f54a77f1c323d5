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
    """Mean and variance by Chan's parallel merge of per-batch moments (stable in float64 across
    batches), plus max, min and the count of positive values."""

    def __init__(self, n_neurons: int, device: str = "cpu", scratch: Scratch | None = None) -> None:
        self.count = 0
        self.mean = torch.zeros(n_neurons, dtype=torch.float64, device=device)
        self.m2 = torch.zeros(n_neurons, dtype=torch.float64, device=device)
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
        n_batch = activations.shape[0] * activations.shape[1]
        # Column sums as two native reductions (over tokens, then excerpts) into a reused scratch
        # buffer: no temporaries, and no BLAS call, whose thread pool would fight the elementwise
        # pool on a small CPU (a GEMV after an elementwise op measured 8x slower than either
        # alone). Within a batch (a few thousand values) float32 is accurate to ~1e-7 relative:
        # the values are centred on the batch mean first, and the residual sum corrects the
        # rounding of that mean (the corrected two-pass formula); batches merge in float64, so the
        # error does not grow with the corpus.
        scratch = self._scratch.like(activations)

        def column_sum(values: torch.Tensor) -> torch.Tensor:
            return values.sum(dim=1).sum(dim=0)  # (B, T, D) -> (D,)

        batch_mean = column_sum(activations) / n_batch  # (D,)
        torch.sub(activations, batch_mean, out=scratch)
        residual = column_sum(scratch).double()
        torch.mul(scratch, scratch, out=scratch)
        batch_m2 = column_sum(scratch).double() - residual**2 / n_batch
        torch.gt(activations, 0, out=scratch)  # counts of up to 2^24 per batch are exact in float32
        self.positive += column_sum(scratch).round().long()
        batch_mean_64 = batch_mean.double() + residual / n_batch
        total = self.count + n_batch
        delta = batch_mean_64 - self.mean
        self.mean += delta * (n_batch / total)
        self.m2 += batch_m2.clamp(min=0) + delta**2 * (self.count * n_batch / total)
        self.count = total
        self.max = torch.maximum(self.max, excerpt_max.amax(dim=0))
        self.min = torch.minimum(self.min, excerpt_min.amin(dim=0))

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
