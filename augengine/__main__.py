"""``python -m augengine`` is the ``augengine`` command."""
import sys

from augengine.cli import main

sys.exit(main())
