from services.ops_worker.main import main

raise SystemExit(main())
