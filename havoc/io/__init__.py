"""Reading and writing checkpoints: safetensors (our format), GGUF (import), atomic file writes."""
