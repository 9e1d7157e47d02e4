"""`python tools/benchmark.py ...`: the command-line tool :mod:`sed.tools.benchmark` (see its help, or
`python -m sed.tools.benchmark --help`)."""
import sys

from sed.tools.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
