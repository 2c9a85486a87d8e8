"""Key material: a CA and the certificates it signs, a self-signed serving certificate, the
service-account key pair, and a certificate's fingerprint.

Used by the debug endpoint (its TLS certificate when nobody gives one) and by the local control
plane (``ctrltrace.envtest``: its CA, serving and client certificates). Pure computation on keys
and certificates; the caller decides where the PEM bytes are written.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

VALIDITY = datetime.timedelta(days=7)
# Backdated so that a clock a little behind the issuer's still accepts the certificate.
_SKEW = datetime.timedelta(minutes=5)


@dataclass(frozen=True)
class KeyPair:
    cert_pem: bytes
    key_pem: bytes


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _name(common_name: str, organizations: tuple[str, ...] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
    attributes += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    return x509.Name(attributes)


def _alt_names(hosts: Iterable[str]) -> x509.SubjectAlternativeName:
    names: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):  # each once, in order
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host.strip("[]"))))
        except ValueError:
            names.append(x509.DNSName(host))
    return x509.SubjectAlternativeName(names)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    key: ec.EllipticCurvePublicKey,
    validity: datetime.timedelta,
) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(now + validity)
    )


def _leaf(
    builder: x509.CertificateBuilder,
    usage: x509.ObjectIdentifier,
    alt_names: x509.SubjectAlternativeName | None,
) -> x509.CertificateBuilder:
    builder = builder.add_extension(
        x509.BasicConstraints(ca=False, path_length=None), critical=True
    ).add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder if alt_names is None else builder.add_extension(alt_names, critical=False)


class CertificateAuthority:
    """A throw-away CA that signs serving certificates and client identities."""

    def __init__(self, common_name: str = "ctrltrace-envtest-ca") -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = _name(common_name)
        self._cert = (
            _builder(name, name, self._key.public_key(), VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )

    @property
    def cert_pem(self) -> bytes:
        return self._cert.public_bytes(serialization.Encoding.PEM)

    def serving(self, hosts: tuple[str, ...] = ("127.0.0.1", "localhost")) -> KeyPair:
        return self._issue(
            _name("kube-apiserver"), ExtendedKeyUsageOID.SERVER_AUTH, _alt_names(hosts)
        )

    def client(self, user: str, groups: tuple[str, ...] = ()) -> KeyPair:
        """A client certificate: the apiserver reads CN as the user name and O as its groups."""
        return self._issue(_name(user, groups), ExtendedKeyUsageOID.CLIENT_AUTH, None)

    def _issue(
        self,
        subject: x509.Name,
        usage: x509.ObjectIdentifier,
        alt_names: x509.SubjectAlternativeName | None,
    ) -> KeyPair:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = _builder(subject, self._cert.subject, key.public_key(), VALIDITY)
        cert = _leaf(builder, usage, alt_names).sign(self._key, hashes.SHA256())
        return KeyPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def self_signed(
    common_name: str, hosts: Iterable[str], validity: datetime.timedelta = VALIDITY
) -> KeyPair:
    """A serving certificate (ECDSA P-256) signed by its own key, for ``hosts``: nobody can
    verify it without being given it, but it keeps what crosses the network private."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(common_name)
    builder = _builder(name, name, key.public_key(), validity)
    cert = _leaf(builder, ExtendedKeyUsageOID.SERVER_AUTH, _alt_names(hosts))
    return KeyPair(
        cert.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM), _key_pem(key)
    )


def fingerprint(cert_pem: bytes) -> str:
    """The first certificate's SHA-256 fingerprint, as ``openssl x509 -fingerprint`` writes it
    (``AB:CD:...``), to compare with what a client was shown."""
    digest = x509.load_pem_x509_certificate(cert_pem).fingerprint(hashes.SHA256())
    return ":".join(f"{byte:02X}" for byte in digest)


def service_account_signing_key() -> KeyPair:
    """The key pair the apiserver signs and verifies service-account tokens with.

    ``cert_pem`` holds the public key (PEM), which ``--service-account-key-file`` accepts.
    """
    key = ec.generate_private_key(ec.SECP256R1())
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return KeyPair(public, _key_pem(key))
