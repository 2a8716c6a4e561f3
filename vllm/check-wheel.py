#!/usr/bin/env python3
"""usage: check-wheel WHEEL_DIR PATTERN...

Fails the build, naming what is missing, unless WHEEL_DIR holds exactly one wheel and that wheel has a member
matching each glob PATTERN. Optional extensions and file finders drop files silently (vLLM's vendored
triton_kernels is `optional=True`; its chat templates ship only when setuptools-scm sees .git): this makes the
loss loud.
"""

import fnmatch
import sys
import zipfile
from pathlib import Path

wheel_dir, patterns = Path(sys.argv[1]), sys.argv[2:]
wheels = sorted(wheel_dir.glob("*.whl"))
if len(wheels) != 1:
    sys.exit(f"check-wheel: expected one wheel in {wheel_dir}, found {[w.name for w in wheels]}")
names = zipfile.ZipFile(wheels[0]).namelist()
missing = [p for p in patterns if not fnmatch.filter(names, p)]
if missing:
    sys.exit(f"check-wheel: {wheels[0].name} lacks {', '.join(missing)} ({len(names)} files in it)")
print(f"check-wheel: {wheels[0].name} ({len(names)} files) has {', '.join(patterns)}")
