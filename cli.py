"""`python cli.py ...` from a checkout does what the installed `derive` command does."""

import sys

from derive.cli import main

if __name__ == "__main__":
    sys.exit(main())
