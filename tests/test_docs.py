"""The README and .env.example list every setting the code reads from the environment."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def environment_variables() -> set[str]:
    source = (ROOT / "santaadmin" / "settings.py").read_text()
    return set(
        re.findall(r'(?:env|Env\(\))\.(?:str|bool|int|float|list|path|db_url)\("([A-Z_]+)"', source)
    )


def test_every_variable_is_documented():
    variables = environment_variables()
    assert {"DATABASE_URL", "SECRET_KEY", "SYNC_MAX_BODY_BYTES"} <= variables
    example = (ROOT / ".env.example").read_text()
    readme = (ROOT / "README.md").read_text()
    assert not {v for v in variables if not re.search(rf"^#? ?{v}=", example, re.M)}
    assert not {v for v in variables if v not in readme}
