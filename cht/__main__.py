import sys

from cht.cli import main

sys.exit(main())
