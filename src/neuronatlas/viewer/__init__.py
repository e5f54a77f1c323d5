"""The neuron viewer: a static site, a terminal view and a local server over the published table."""
