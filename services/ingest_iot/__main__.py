from services.ingest_iot.main import main

raise SystemExit(main())
