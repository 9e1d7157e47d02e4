"""`python tools/check_dataset.py ...`: the command-line tool :mod:`sed.tools.check_dataset` (see its help, or
`python -m sed.tools.check_dataset --help`)."""
import sys

from sed.tools.check_dataset import main

if __name__ == "__main__":
    sys.exit(main())
