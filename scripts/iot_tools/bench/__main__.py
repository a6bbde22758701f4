from iot_tools.bench.cli import main

raise SystemExit(main())
