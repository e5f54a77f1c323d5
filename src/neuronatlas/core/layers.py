"""Layer selections: `all`, `5`, `0,5`, `3-7`, `0-3,10`."""


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
