"""lrface: low-resolution face recognition (shared core: settings, preprocessing, data, model card)."""

__version__ = "0.1.0"
