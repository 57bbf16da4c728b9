"""``python -m jaxhlm`` runs the command line (:mod:`jaxhlm.cli`)."""

import sys

from .cli import main

sys.exit(main())
