"""STAND-IN for torch.cuda: never a GPU in the test bed."""


def is_available() -> bool:
    return False


def device_count() -> int:
    return 0


def get_arch_list() -> list:
    return []
