"""One Great Expectations suite per dataset, as code.

A suite validates a pandas "validation frame": the dataset's scalar columns plus columns derived
from its list columns (lengths, minima, maxima, null counts), because GE has no expectations on
list-valued columns.
"""
