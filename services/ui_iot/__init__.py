"""ui_iot: read API and a small page over PostgreSQL (FastAPI on uvicorn), with /health and
/ready on the same port."""
