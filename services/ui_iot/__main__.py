from services.ui_iot.main import main

raise SystemExit(main())
