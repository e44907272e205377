"""Shared test setup.

CPU results depend on torch's thread count, and vqclip's thread policy would otherwise pick it
from how busy the machine is: the tests fix it (unless the environment already does) so that
pinned pixels and byte-identical reruns hold on a loaded machine too. tests/test_threads.py
checks the policy itself.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "2")
