"""STAND-IN for vLLM's use_existing_torch.py: drop the torch pins so the build keeps the installed torch."""

import glob

for path in glob.glob("requirements/*.txt") + ["pyproject.toml"]:
    with open(path) as f:
        lines = f.readlines()
    kept = [line for line in lines if not line.strip().lower().startswith("torch")]
    if kept != lines:
        print(f"removed torch pins from {path}")
        with open(path, "w") as f:
            f.writelines(kept)
