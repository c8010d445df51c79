"""`python -m gateway.cli`: the same entry point as the `edge-gateway` script."""

import sys

from gateway.cli.main import main

sys.exit(main())
