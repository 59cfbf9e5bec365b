"""Pure selection algorithms: numpy arrays in, numpy arrays out, no Dagster imports.

Usable from plain Python (notebooks, other orchestrators) without running the pipeline.
"""
