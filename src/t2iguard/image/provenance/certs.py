"""Certificates for C2PA signing: a throw-away test CA and signing certificate.

C2PA (Coalition for Content Provenance and Authenticity, *C2PA Technical Specification* 2.x,
§14 "Trust model") signs a manifest with an X.509 end-entity certificate whose chain leads to a
trust anchor. Production deployments bring their own certificate (see the README: a PEM chain
``leaf + intermediates`` and the leaf's PEM private key). This module makes a local CA and a leaf
certificate with the extensions the C2PA validator requires (digitalSignature key usage, an
accepted extended key usage, subject/authority key identifiers), for tests and local trials. Its
output is never trusted by anyone else.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# id-kp-documentSigning (RFC 9336), one of the EKUs the C2PA validator accepts
DOCUMENT_SIGNING = x509.ObjectIdentifier("1.3.6.1.5.5.7.3.36")


@dataclass(frozen=True)
class TestCredentials:
    """PEM strings: the signing chain (leaf then CA), the leaf's private key, and the CA alone."""

    chain_pem: str
    key_pem: str
    ca_pem: str
    alg: str = "es256"

    def write(self, directory: str | Path) -> dict[str, Path]:
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        paths = {"chain": d / "chain.pem", "key": d / "signer.key", "ca": d / "ca.pem"}
        paths["chain"].write_text(self.chain_pem)
        paths["key"].write_text(self.key_pem)
        paths["key"].chmod(0o600)
        paths["ca"].write_text(self.ca_pem)
        return paths


def _name(cn: str, org: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn), x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)])


def make_test_credentials(org: str = "t2iguard test", days: int = 30) -> TestCredentials:
    """A fresh P-256 CA and an ES256 signing certificate issued by it (valid ``days`` days)."""
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name(f"{org} root CA", org)
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{org} signer", org))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION, DOCUMENT_SIGNING]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    ca_pem = ca.public_bytes(pem).decode()
    key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()
    return TestCredentials(chain_pem=leaf.public_bytes(pem).decode() + ca_pem, key_pem=key_pem, ca_pem=ca_pem)
