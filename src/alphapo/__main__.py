import sys

from alphapo.cli import main

sys.exit(main())
