"""STAND-IN for Triton's python package (the test bed's triton comes from the stand-in wheel)."""
