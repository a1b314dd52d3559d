import sys

from .converge import main

sys.exit(main())
