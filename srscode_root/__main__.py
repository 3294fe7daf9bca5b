"""``python -m srscode ...`` is the ``srscode`` command (handy under ``accelerate launch -m``)."""
import sys

from srscode.core.cli import main

sys.exit(main())
