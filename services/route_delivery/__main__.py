from services.route_delivery.main import main

raise SystemExit(main())
