import sys

from iot_tools.drill.cli import main

sys.exit(main())
