"""Reading and writing rasters and vector files."""
