"""``python -m worker_runtime_http serve ...``: the same as the ``worker-runtime-http`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
