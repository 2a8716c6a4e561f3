"""gracectl: build, verify, publish and roll back vLLM images for GH200 (linux/arm64, sm_90a)."""

__version__ = "0.1.0"
