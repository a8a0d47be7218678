"""`stellwerk serve --tls-cert --tls-key`: HTTPS from certificate files, without Kubernetes or a
proxy (a status page on its custom domain), over real TLS with a self-signed certificate."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import subprocess
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from tests.cli.server import STELLWERK, running_server
from tests.conftest import free_port
from tests.polling import wait_until

pytestmark = pytest.mark.slow  # starts processes


def self_signed(folder: Path, host: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName(host), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def test_a_page_is_served_over_https_from_certificate_files(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path, "status.acme.example")
    port = free_port()
    data = tmp_path / "data"
    args = ["--tls-cert", str(cert), "--tls-key", str(key)]
    with running_server(data, port, *args, ready=False) as server:
        url = f"https://127.0.0.1:{port}"
        with httpx.Client(
            base_url=url, verify=ssl.create_default_context(cafile=cert), timeout=5
        ) as client:

            def ready() -> int:
                if server.process.poll() is not None:
                    raise AssertionError(f"server exited: {server.output()}")
                return client.get("/readyz").status_code

            wait_until(ready, accept=lambda code: code == 200, ignoring=httpx.TransportError)
            admin = {
                "Authorization": "Bearer "
                + json.loads((data / "bootstrap.json").read_text())["admin_key"]
            }
            made = client.put(
                "/v1/status-pages/acme",
                headers=admin,
                json={"title": "Acme", "domains": ["status.acme.example"]},
            )
            assert made.status_code == 201, made.text
            page = client.get("/status/acme")
            assert page.status_code == 200
            assert "All Systems Operational" in page.text
        # Plain HTTP on the same port is no way in.
        with pytest.raises(httpx.TransportError):
            httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5)


def test_a_certificate_without_its_key_stops_the_start(tmp_path: Path) -> None:
    cert, _key = self_signed(tmp_path, "status.acme.example")
    alone = subprocess.run(
        [STELLWERK, "serve", "--data-dir", str(tmp_path / "d"), "--tls-cert", str(cert)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert alone.returncode != 0
    assert "--tls-cert and --tls-key go together" in alone.stderr
    wrong = tmp_path / "wrong.pem"
    wrong.write_text("not a key")
    mismatched = subprocess.run(
        [STELLWERK, "serve", "--data-dir", str(tmp_path / "d"), "--tls-cert", str(cert),
         "--tls-key", str(wrong)],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    assert mismatched.returncode != 0
    assert f"cannot use the certificate {cert}" in mismatched.stderr
