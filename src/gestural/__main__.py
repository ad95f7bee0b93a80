"""``python -m gestural``: the command line of :mod:`gestural.cli.main`."""

import sys

from gestural.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
