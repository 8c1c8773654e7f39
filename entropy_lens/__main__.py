import sys

from entropy_lens.cli import main

sys.exit(main())
