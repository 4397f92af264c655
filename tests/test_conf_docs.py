"""docs/directives.md is generated from the command table and kept in step with it."""

from __future__ import annotations

from pathlib import Path

from mailfront.conf import directives as d
from mailfront.conf.docs import main, render

DOC = Path(__file__).parent.parent / "docs" / "directives.md"


def test_directives_md_is_up_to_date() -> None:
    assert DOC.read_text() == render(), (
        "docs/directives.md is stale: run python -m mailfront.conf.docs docs/directives.md"
    )
    assert main(["--check", str(DOC)]) == 0


def test_every_directive_is_documented() -> None:
    text = DOC.read_text()
    for row in d.TABLE:
        assert f"| `{row.name}` |" in text, row.name
    assert "| `auth_file` | `auth_file file` | — | mail, server | mailfront extension |" in text
    # a directive read but not carried out yet is marked; one supported for some values says so
    unsupported = [row.name for row in d.TABLE if not row.supported and not row.ignored]
    assert ("**not supported yet**" in text) == bool(unsupported)
    assert "| supported: `off` only |" in text  # ssl_certificate_compression
