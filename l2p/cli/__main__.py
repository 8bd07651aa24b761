"""``python -m l2p.cli``: the same as the ``l2p`` command."""

import sys

from . import main

sys.exit(main())
