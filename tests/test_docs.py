"""The documentation site builds in strict mode (a broken reference or docstring fails), and every public module
has a page in the API reference."""

import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_the_docs_site_builds_with_warnings_as_errors(tmp_path):
    pytest.importorskip("mkdocs", reason="the docs extra (mkdocs, mkdocs-material, mkdocstrings) is not installed")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
                          cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={"PATH": "/usr/bin:/bin", "NO_MKDOCS_2_WARNING": "1", "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "site" / "reference" / "cells" / "index.html").stat().st_size > 10_000


def test_every_public_module_is_in_the_reference():
    referenced = " ".join(path.read_text() for path in (ROOT / "docs" / "reference").glob("*.md"))
    modules = []
    for path in sorted((ROOT / "rnn_jax").rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        if any(part.startswith("_") and part != "__init__" for part in parts) or parts[-1] == "__main__":
            continue
        modules.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    aliases = {"rnn_jax.training", "rnn_jax.fused"}  # aliases of rnn_jax.train and rnn_jax.runners.fused
    missing = [m for m in modules if f"::: {m}\n" not in referenced + "\n" and m not in aliases]
    assert missing == []
