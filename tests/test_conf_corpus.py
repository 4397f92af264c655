"""The corpus of broken configurations: mailfront -t and nginx -t say the same thing.

Each ``tests/conf_corpus/NNN-name.conf`` starts with two comment lines::

    # expect: <the first [emerg] message of ``mailfront -t``>
    # nginx: same | differs: <why>

``$FILE`` stands for the file itself, ``$DIR`` for the corpus folder and
``$PREFIX`` for the ``-p`` prefix.  The files load nginx's dynamic mail module
(Debian's ``libnginx-mod-mail``), which mailfront skips.  Where nginx 1.22 and
the specification differ (spec section 1.13), or mailfront refuses what it does
not implement yet, the file says ``differs`` and is left out of the comparison.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
from contextlib import redirect_stderr
from pathlib import Path

import pytest

from mailfront.cli import main

CORPUS = Path(__file__).parent / "conf_corpus"
CASES = sorted(CORPUS.glob("*.conf"))
NGINX_MAIL_MODULE = "/usr/lib/nginx/modules/ngx_mail_module.so"
EMERG = re.compile(r"^(?:nginx|mailfront): \[emerg\] (.*)$")


def header(path: Path) -> tuple[str, bool]:
    lines = path.read_text().split("\n", 2)
    assert lines[0].startswith("# expect: ") and lines[1].startswith("# nginx: "), path
    return lines[0][len("# expect: ") :], lines[1] == "# nginx: same"


def expected(path: Path, prefix: Path) -> str:
    text, _ = header(path)
    return (
        text.replace("$FILE", str(path))
        .replace("$DIR/", f"{CORPUS}/")
        .replace("$PREFIX/", f"{prefix}/")
    )


def first_emerg(stderr: str) -> str | None:
    for line in stderr.splitlines():
        m = EMERG.match(line)
        if m:
            return m.group(1)
    return None


@pytest.fixture
def prefix(tmp_path: Path) -> Path:
    (tmp_path / "logs").mkdir()
    return tmp_path


def test_the_corpus_is_large_enough() -> None:
    compared = [p for p in CASES if header(p)[1]]
    assert len(CASES) >= 40 and len(compared) >= 40


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_mailfront(path: Path, prefix: Path) -> None:
    err = io.StringIO()
    with redirect_stderr(err):
        rc = main(["-t", "-c", str(path), "-p", str(prefix)])
    assert rc == 1
    assert first_emerg(err.getvalue()) == expected(path, prefix)
    assert err.getvalue().endswith(f"mailfront: configuration file {path} test failed\n")


def nginx_available() -> str | None:
    """Why nginx cannot be compared here, or None."""
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx")
                                      else None)  # fmt: skip
    if nginx is None:
        return "nginx is not installed"
    if not os.path.exists(NGINX_MAIL_MODULE):
        return f"nginx's mail module is not installed ({NGINX_MAIL_MODULE}: libnginx-mod-mail)"
    return None


@pytest.mark.skipif(nginx_available() is not None, reason=str(nginx_available()))
@pytest.mark.parametrize("path", [p for p in CASES if header(p)[1]],
                         ids=[p.stem for p in CASES if header(p)[1]])  # fmt: skip
def test_nginx_agrees(path: Path, prefix: Path) -> None:
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    run = subprocess.run(
        [nginx, "-t", "-c", str(path), "-p", f"{prefix}/", "-e", f"{prefix}/logs/early.log"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert run.returncode == 1, run.stderr
    assert first_emerg(run.stderr) == expected(path, prefix)
