"""Windowed inference: window grids, the one-block engine, and class-map writing."""
