"""HTTP routes: they translate requests to calls of plain functions (embedder, gallery)."""
