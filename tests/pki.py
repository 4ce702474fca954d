"""Test certificates from the openssl CLI: P-256 CAs and leaves; a missing CLI fails in CI."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

EC_KEY = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes")


def openssl() -> str:
    """Return the openssl CLI; a failure in CI (CI=true), a skip elsewhere."""
    found = shutil.which("openssl")
    if found is None:
        message = "the openssl CLI is not on PATH; it generates the test certificates"
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true and {message}", pytrace=False)
        pytest.skip(message)
    return found


def run_openssl(directory: Path, *args: str) -> None:
    """Run openssl in a directory, failing the test with its stderr."""
    done = subprocess.run(
        [openssl(), *args], cwd=directory, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


def make_ca(directory: Path, name: str, cn: str | None = None) -> None:
    """Write a self-signed CA as NAME.pem and NAME.key (common name: cn, or the name)."""
    run_openssl(
        directory, "req", "-x509", *EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.pem",
        "-days", "2", "-subj", f"/CN={cn or name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
    )  # fmt: skip


def issue(directory: Path, ca: str, name: str, cn: str, extensions: str) -> None:
    """Write a leaf certificate NAME.pem and NAME.key signed by CA, with extra extensions."""
    run_openssl(
        directory, "req", *EC_KEY, "-keyout", f"{name}.key", "-out", f"{name}.csr",
        "-subj", f"/CN={cn}",
    )  # fmt: skip
    (directory / f"{name}.ext").write_text(
        extensions + "\nsubjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid,issuer\n"
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n"
    )
    run_openssl(
        directory, "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key",
        "-CAcreateserial", "-days", "2", "-out", f"{name}.pem", "-extfile", f"{name}.ext",
    )  # fmt: skip
