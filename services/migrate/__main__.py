import asyncio
import logging
import sys

from services.common.config import load
from services.common.logs import setup_logging
from services.migrate import DatabaseNotReachableError, MigrateConfig, RoleSetupError, migrate

config = load("migrate", MigrateConfig.from_env)
setup_logging("migrate", "INFO")
try:
    applied = asyncio.run(migrate(config))
except (DatabaseNotReachableError, RoleSetupError) as error:
    logging.getLogger("migrate").error("%s", error)
    sys.exit(1)
logging.getLogger("migrate").info(
    "schema up to date (%s)", f"applied {', '.join(applied)}" if applied else "nothing to apply")
