"""STAND-IN for torch.version: the compile-time facts of the real torch 2.10.0 CUDA 12.9 wheel."""

__version__ = "2.10.0+cu129"
cuda = "12.9"
git_version = "standin"
