"""``python -m drdm.cli``: the ``drdm`` program."""
import sys

from .main import main

sys.exit(main())
