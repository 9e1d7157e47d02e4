"""`python tools/spread_text_tower.py ...`: the command-line tool :mod:`sed.tools.spread_text_tower` (see its help, or
`python -m sed.tools.spread_text_tower --help`)."""
import sys

from sed.tools.spread_text_tower import main

if __name__ == "__main__":
    sys.exit(main())
