"""I/O behind small interfaces: storage, sources, models (and later LLM backends)."""
