"""Prefect flows: composition only (one per stage, and the end-to-end `atlas`)."""
