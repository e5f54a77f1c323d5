"""Layer selections (`all`, `5`, `0,5`, `3-7`, `0-3,10`) and neuron selections (`24`, `5:12,6:40`)."""

import numpy as np


def parse_layers(spec: str, n_layers: int) -> list[int]:
    """Sorted, distinct layer indices; `ValueError` naming the problem for a bad spec."""
    if spec.strip() == "all":
        return list(range(n_layers))
    layers: set[int] = set()
    for raw in spec.split(","):
        part = raw.strip()
        try:
            if "-" in part:
                first, last = (int(x) for x in part.split("-", 1))
                if first > last:
                    raise ValueError
                layers.update(range(first, last + 1))
            else:
                layers.add(int(part))
        except ValueError:
            raise ValueError(f"'{part}' is not a layer, a range like 3-7, or 'all'") from None
    out_of_range = sorted(layer for layer in layers if not 0 <= layer < n_layers)
    if out_of_range:
        raise ValueError(f"layer {out_of_range[0]} is out of range: the model has layers 0-{n_layers - 1}")
    return sorted(layers)


def parse_neurons(spec: str, layers: list[int], d_mlp: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """A neuron selection: a count N (N neurons sampled without replacement from every neuron of
    `layers`, drawn with `rng`), all (every neuron of `layers`) or an explicit list `L:N,L:N`.
    Sorted (layer, neuron) pairs; `ValueError` naming the problem."""
    spec = spec.strip()
    if spec == "all":
        return [(layer, neuron) for layer in sorted(layers) for neuron in range(d_mlp)]
    if spec.isdigit():
        count = int(spec)
        total = len(layers) * d_mlp
        if not 1 <= count <= total:
            raise ValueError(f"{count} neurons asked, the selected layers have {total}")
        flat = rng.choice(total, size=count, replace=False)
        return sorted((layers[int(i) // d_mlp], int(i) % d_mlp) for i in flat)
    chosen: set[tuple[int, int]] = set()
    for raw in spec.split(","):
        part = raw.strip()
        layer_text, _, neuron_text = part.partition(":")
        if not (layer_text.isdigit() and neuron_text.isdigit()):
            raise ValueError(f"'{part}' is neither a count nor a neuron like 5:123")
        layer, neuron = int(layer_text), int(neuron_text)
        if layer not in layers:
            raise ValueError(f"{part}: layer {layer} is not among the extracted layers {_ranges(layers)}")
        if not 0 <= neuron < d_mlp:
            raise ValueError(f"{part}: neuron {neuron} is out of range (0-{d_mlp - 1})")
        chosen.add((layer, neuron))
    return sorted(chosen)


def _ranges(layers: list[int]) -> str:
    return ",".join(map(str, layers)) if len(layers) <= 6 else f"{layers[0]}-{layers[-1]} ({len(layers)} layers)"


def spread_layers(extracted: list[int], count: int) -> list[int]:
    """`count` layers spread over the extracted ones: the middles of `count` equal slices."""
    if len(extracted) <= count:
        return list(extracted)
    return [extracted[int((2 * i + 1) * len(extracted) / (2 * count))] for i in range(count)]


def spread_neurons(layers: list[int], count: int, d_mlp: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    """`count` neurons sampled without replacement, as even a share of each layer as the count allows."""
    shares = [count // len(layers) + (i < count % len(layers)) for i in range(len(layers))]
    picked = []
    for layer, share in zip(layers, shares, strict=True):
        picked += [(layer, int(neuron)) for neuron in rng.choice(d_mlp, size=share, replace=False)]
    return sorted(picked)
