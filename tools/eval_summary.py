"""`python tools/eval_summary.py ...`: the command-line tool :mod:`sed.tools.eval_summary` (see its help, or
`python -m sed.tools.eval_summary --help`)."""
import sys

from sed.tools.eval_summary import main

if __name__ == "__main__":
    sys.exit(main())
