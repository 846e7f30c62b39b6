"""Analyses over the graph IR: shape inference (infer) and the layer table (summary)."""
