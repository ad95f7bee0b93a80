"""``python -m gestural``: the command line of :mod:`gestural.cli`."""

import sys

from gestural.cli import main

if __name__ == "__main__":
    sys.exit(main())
