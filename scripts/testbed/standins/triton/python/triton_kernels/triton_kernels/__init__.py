"""STAND-IN for triton_kernels v3.6.0 (gracectl test bed): defines the modules and names that vLLM 0.19.0
imports (see /work/shared/UPSTREAM-FACTS.md); calling any of them raises NotImplementedError."""

STANDIN = True


def standin(name):
    """A callable placeholder for the real kernel `name`."""

    def call(*args, **kwargs):
        raise NotImplementedError(f"triton_kernels.{name} is a gracectl test-bed stand-in")

    call.__name__ = name.rsplit(".", 1)[-1]
    return call


class StandIn:
    """Base of the stand-in classes: constructible, holds its arguments, computes nothing."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs
