"""The gallery: a durable store (source of truth) and a FAISS index derived from it."""
