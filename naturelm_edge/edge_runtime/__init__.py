"""On-device runtime (numpy, onnxruntime, tokenizers; never torch)."""
