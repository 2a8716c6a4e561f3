"""STAND-IN for vllm.utils."""
