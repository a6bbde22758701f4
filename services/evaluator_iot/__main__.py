from services.evaluator_iot.main import main

raise SystemExit(main())
