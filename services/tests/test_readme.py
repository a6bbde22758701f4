"""The README's configuration table matches what the code reads: every variable, where it
is used and its default, found by reading the config modules' source."""

import ast
import re
from pathlib import Path

SERVICES_DIR = Path(__file__).resolve().parents[1]
README = SERVICES_DIR.parent / "README.md"
ENV_READERS = {"text", "integer", "seconds", "flag", "choice", "url"}
CONFIG_SOURCES = {
    "all": SERVICES_DIR / "common" / "config.py",
    "migrate": SERVICES_DIR / "migrate" / "__init__.py",
    **{name: SERVICES_DIR / name / "config.py" for name in
       ("ingest_iot", "evaluator_iot", "ops_worker", "route_delivery", "ui_iot")},
}


def _format_default(node: ast.expr | None) -> str:
    if node is None:
        return "required"
    value = ast.literal_eval(node)
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def variables_in_code() -> dict[str, tuple[set[str], str]]:
    """variable -> (where it is read, its default as the README writes it)."""
    found: dict[str, tuple[set[str], str]] = {}
    for user, path in CONFIG_SOURCES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in ENV_READERS and node.args
                    and isinstance(node.args[0], ast.Constant)):
                continue
            name = node.args[0].value
            default = node.args[1] if len(node.args) > 1 and node.func.attr != "url" else next(
                (kw.value for kw in node.keywords if kw.arg == "default"), None)
            users, _ = found.get(name, (set(), ""))
            found[name] = (users | {user}, _format_default(default))
    return found


def variables_in_readme() -> dict[str, tuple[set[str], str]]:
    text = README.read_text()
    table = text.split("<!-- env-table:begin -->")[1].split("<!-- env-table:end -->")[0]
    rows = {}
    for line in table.splitlines():
        match = re.match(r"\| `([A-Z_]+)` \| ([^|]+) \| ([^|]+) \|", line)
        if match:
            name, users, default = match.groups()
            rows[name] = ({u.strip() for u in users.split(",")}, default.strip())
    return rows


def test_readme_lists_every_variable_the_code_reads_with_its_users_and_default():
    documented = variables_in_readme()
    documented.pop("PGPASSWORD")  # read by asyncpg itself, not by our config code
    assert documented == variables_in_code()
