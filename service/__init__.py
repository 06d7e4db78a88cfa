"""The lrface HTTP service: ONNX Runtime inference, FAISS search, a durable gallery. Never imports torch."""
