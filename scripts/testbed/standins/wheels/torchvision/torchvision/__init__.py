"""STAND-IN for torchvision 0.25.0+cu129 (gracectl test bed): the version only, no operators."""

__version__ = "0.25.0+cu129"
STANDIN = True
