#!/usr/bin/python3 -I
"""floor-agent, @ROLE@ role (floor-agent-@ROLE@): this project and the @ROLE@ role's Python
dependencies only, from /usr/lib/floor-agent/@ROLE@/lib. -I: no user site-packages, no
PYTHONPATH, no current directory on the path."""
import sys

sys.path.insert(0, "/usr/lib/floor-agent/@ROLE@/lib")
from floor_agent.cli import main  # noqa: E402

sys.exit(main())
