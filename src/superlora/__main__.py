import sys

from superlora.cli import main

sys.exit(main())
