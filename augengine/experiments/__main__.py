"""``python -m augengine.experiments`` is ``augengine experiment``."""
import sys

from augengine.experiments.cli import main

sys.exit(main())
