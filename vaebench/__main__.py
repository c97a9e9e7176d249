import sys

from vaebench.cli import main

sys.exit(main())
