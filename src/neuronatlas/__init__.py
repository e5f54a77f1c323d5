"""neuronatlas: automated neuron explanations as a versioned, validated data product."""

__version__ = "0.1.0"
