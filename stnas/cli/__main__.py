import sys

from stnas.cli import main

sys.exit(main())
