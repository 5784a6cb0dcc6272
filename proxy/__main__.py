"""`python -m semcache.proxy serve ...` is `semcache serve ...`."""

import sys

from .cli import main

sys.exit(main())
