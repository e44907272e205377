#!/usr/bin/env python
"""`python run.py ...` is the same as the `vqclip` console script."""

import sys

from vqclip.cli import main

if __name__ == "__main__":
    sys.exit(main())
