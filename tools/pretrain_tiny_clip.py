"""`python tools/pretrain_tiny_clip.py ...`: the command-line tool :mod:`sed.tools.pretrain_tiny_clip` (see its help, or
`python -m sed.tools.pretrain_tiny_clip --help`)."""
import sys

from sed.tools.pretrain_tiny_clip import main

if __name__ == "__main__":
    sys.exit(main())
