"""The `bed` fixture of the test-bed tests: `from testbed_fixture import bed`.

Brings the test bed up once per session (a no-op when `gracectl testbed up` ran before, as in scripts/test.sh).
"""

import pytest

from gracectl.testbed import Testbed


@pytest.fixture(scope="session")
def bed() -> Testbed:
    bed = Testbed()
    bed.up()
    return bed
