"""`python tools/demo.py ...`: the command-line tool :mod:`sed.tools.demo` (see its help, or
`python -m sed.tools.demo --help`)."""
import sys

from sed.tools.demo import main

if __name__ == "__main__":
    sys.exit(main())
