"""`python -m semcache.backend ...`: what `semcache serve` starts as its child process."""

import sys

from .server import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
