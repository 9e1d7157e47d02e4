"""`python tools/export.py ...`: the command-line tool :mod:`sed.tools.export` (see its help, or
`python -m sed.tools.export --help`)."""
import sys

from sed.tools.export import main

if __name__ == "__main__":
    sys.exit(main())
