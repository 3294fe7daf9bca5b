"""``python -m srscode ...`` is the ``srscode`` command (also ``accelerate launch -m srscode ...``)."""
import sys

from srscode.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
