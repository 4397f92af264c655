import sys

from mailfront.cli import main

sys.exit(main())
