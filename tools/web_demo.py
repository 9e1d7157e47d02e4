"""`python tools/web_demo.py ...`: the command-line tool :mod:`sed.tools.web_demo` (see its help, or
`python -m sed.tools.web_demo --help`)."""
import sys

from sed.tools.web_demo import main

if __name__ == "__main__":
    sys.exit(main())
