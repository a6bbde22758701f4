"""route_delivery: route fan-out from JetStream (stream ROUTES) to webhooks, with retries
and dead letters."""
