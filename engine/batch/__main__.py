"""``python -m engine.batch``."""

import sys

from engine.batch.cli import main

sys.exit(main())
