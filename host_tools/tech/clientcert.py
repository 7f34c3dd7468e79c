"""The box's TLS client certificate and key for `parcelbox provision`: PEM files on the
technician's machine, checked, and turned into the DER files the box's tls module loads.

Why DER: the ESP32 port hands the files to MicroPython's `ssl.load_cert_chain`, whose
mbedTLS reads PEM only in a build with MBEDTLS_PEM_PARSE_C; DER it always reads. The key is
written as PKCS#1 (RSA) or SEC1 (EC) DER, not PKCS#8: MicroPython 1.23 passes a key one byte
longer than it is (a NUL for PEM), which mbedTLS 3.5 and later refuse in PKCS#8 only;
1.24 and later pass the exact length, and every form parses (extmod/modtls_mbedtls.c,
mbedTLS library/pkparse.c). mbedTLS signs with RSA and EC keys only.

The key's bytes never reach a message or a log: every error below is written here, none is
passed on from the parser. The CA is not handled here: it goes as PEM, and the box decodes
it itself (pb_esp32.net._der).
"""

from __future__ import annotations

import datetime
import hashlib
from dataclasses import dataclass, field

CERT_NAME = "cert.der"   # on the box's flash, named in config.json's broker.cert
KEY_NAME = "key.der"     # broker.key
_MAX_FILE = 65536        # bytes of a PEM file: a certificate and a 4096-bit key are a few KB


class ClientCertError(ValueError):
    """A certificate or key the box could not use; the message never holds the key."""


@dataclass(frozen=True)
class ClientCert:
    cert_der: bytes
    subject: str
    key_kind: str        # "EC P-256", "RSA 2048"
    not_after: datetime.datetime
    key_der: bytes = field(repr=False)   # a secret: to the board's flash only, never printed

    def summary(self) -> str:
        """For the technician: the certificate's subject, expiry and hash; of the key its kind."""
        return ("client certificate %s (%s, valid until %s, sha256 %s) and its %s key"
                % (CERT_NAME, self.subject, self.not_after.strftime("%Y-%m-%d"),
                   hashlib.sha256(self.cert_der).hexdigest()[:16], self.key_kind))


def _read(path: str, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_FILE + 1)
    except OSError as e:
        raise ClientCertError("cannot read the %s file %s: %s" % (what, path, e.strerror)) from None
    if len(data) > _MAX_FILE:
        raise ClientCertError("%s is larger than %d KB: not a PEM %s" % (path, _MAX_FILE // 1024, what))
    return data


def _certificate(path: str):
    from cryptography import x509
    data = _read(path, "client certificate")
    if b"-----BEGIN CERTIFICATE-----" not in data:
        raise ClientCertError("%s is not a PEM certificate (no BEGIN CERTIFICATE block)" % path)
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise ClientCertError("%s is not a PEM certificate: its CERTIFICATE block does not parse"
                              % path) from None
    if len(certs) != 1:
        raise ClientCertError("%s holds %d certificates: give the box's own certificate alone (the "
                              "box sends one; the broker must trust the CA that signed it)"
                              % (path, len(certs)))
    return certs[0]


def _private_key(path: str):
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization as ser
    from cryptography.hazmat.primitives.asymmetric import ec, rsa
    data = _read(path, "client key")
    if b"ENCRYPTED PRIVATE KEY-----" in data or b"Proc-Type: 4,ENCRYPTED" in data:
        raise ClientCertError("%s is an encrypted key: the box has no passphrase to open it; give "
                              "it decrypted (openssl pkey -in KEY -out box.key asks for the "
                              "passphrase once)" % path)
    if b"PRIVATE KEY-----" not in data:
        raise ClientCertError("%s is not a PEM private key (no BEGIN ... PRIVATE KEY block)" % path)
    try:
        key = ser.load_pem_private_key(data, password=None)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        # their messages may quote the file; ours names it only
        raise ClientCertError("%s is not a PEM private key: its PRIVATE KEY block does not parse"
                              % path) from None
    if isinstance(key, rsa.RSAPrivateKey):
        return key, "RSA %d" % key.key_size
    if isinstance(key, ec.EllipticCurvePrivateKey):
        return key, "EC %s" % _CURVES.get(key.curve.name, key.curve.name)
    other = next((a for n, a in _OTHER if n in type(key).__name__), "another kind of")
    raise ClientCertError("%s is %s key: the box's TLS (mbedTLS) signs with RSA or EC keys only"
                          % (path, other))


_OTHER = (("Ed25519", "an Ed25519"), ("Ed448", "an Ed448"), ("X25519", "an X25519"),
          ("X448", "an X448"), ("DSA", "a DSA"), ("DH", "a DH"))

_CURVES = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}


def load(cert_path: str, key_path: str, now: datetime.datetime | None = None) -> ClientCert:
    """Both PEM files checked and converted; ClientCertError names what is wrong, never the key."""
    from cryptography.hazmat.primitives import serialization as ser
    cert = _certificate(cert_path)
    key, kind = _private_key(key_path)
    spki = ser.PublicFormat.SubjectPublicKeyInfo
    if (cert.public_key().public_bytes(ser.Encoding.DER, spki)
            != key.public_key().public_bytes(ser.Encoding.DER, spki)):
        raise ClientCertError("the key %s does not belong to the certificate %s (their public keys "
                              "differ)" % (key_path, cert_path))
    now = now or datetime.datetime.now(datetime.timezone.utc)
    if cert.not_valid_after_utc < now:
        raise ClientCertError("the certificate %s expired on %s: the broker would refuse it"
                              % (cert_path, cert.not_valid_after_utc.strftime("%Y-%m-%d")))
    key_der = key.private_bytes(ser.Encoding.DER, ser.PrivateFormat.TraditionalOpenSSL,
                                ser.NoEncryption())
    return ClientCert(cert.public_bytes(ser.Encoding.DER), cert.subject.rfc4514_string(), kind,
                      cert.not_valid_after_utc, key_der=key_der)
