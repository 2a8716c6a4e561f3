"""STAND-IN for vllm.entrypoints."""
