"""Entry point of ``python -m providers.fake``."""

import sys

from providers.fake.cli import main

sys.exit(main())
