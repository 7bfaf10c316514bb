"""Pure-numpy/OpenCV pre- and post-processing for vision models (no runtime imports)."""
