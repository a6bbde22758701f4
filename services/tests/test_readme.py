"""The README's configuration table matches what the code reads: every variable, where it
is used and its default, found by reading the config modules' source."""

import ast
import re
from pathlib import Path

SERVICES_DIR = Path(__file__).resolve().parents[1]
README = SERVICES_DIR.parent / "README.md"
ENV_READERS = {"text", "integer", "seconds", "flag", "choice", "url"}
# Readers of variables with no default (unset: the feature is off).
OPTIONAL_READERS = {"optional", "secret", "readable_file"}
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


def _readers(tree: ast.AST):
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr in ENV_READERS | OPTIONAL_READERS and node.args
                and isinstance(node.args[0], ast.Constant)):
            yield node


def variables_in_code() -> dict[str, tuple[set[str], str]]:
    """variable -> (where it is read, its default as the README writes it). A settings class
    of common/config.py that not every service uses (NatsSettings) counts for the services
    whose config calls its from_env."""
    found: dict[str, tuple[set[str], str]] = {}
    sources = {user: path.read_text() for user, path in CONFIG_SOURCES.items()}
    for user, source in sources.items():
        tree = ast.parse(source)
        scoped = {id(node): cls.name for cls in ast.walk(tree) if isinstance(cls, ast.ClassDef)
                  and cls.name == "NatsSettings" for node in _readers(cls)}
        for node in _readers(tree):
            name = node.args[0].value
            if node.func.attr in OPTIONAL_READERS:
                default_text = "—"
            else:
                default = node.args[1] if len(node.args) > 1 and node.func.attr != "url" else next(
                    (kw.value for kw in node.keywords if kw.arg == "default"), None)
                default_text = _format_default(default)
            readers = {user}
            if id(node) in scoped:
                readers = {other for other, text in sources.items()
                           if f"{scoped[id(node)]}.from_env" in text and other != "all"}
            users, _ = found.get(name, (set(), ""))
            found[name] = (users | readers, default_text)
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
