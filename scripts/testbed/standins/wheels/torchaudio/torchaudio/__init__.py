"""STAND-IN for torchaudio 2.10.0+cu129 (gracectl test bed): the version only, no operators."""

__version__ = "2.10.0+cu129"
STANDIN = True
