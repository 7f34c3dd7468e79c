# MicroPython 1.28's `ssl` module on CPython, for the ESP32 port's network tests: it talks
# real TLS (CPython's ssl underneath) but fails the way MicroPython's mbedTLS build does.
"""A fake of MicroPython 1.28's `ssl` (micropython-lib's ssl.py over the `tls` module).

Install it for a test with `monkeypatch.setitem(sys.modules, "ssl", mpssl)`: the ESP32
port imports `ssl` when a connection comes up (firmware/esp32/pb_esp32/net.py). Never name
it ssl.py: this folder is on the VM's path and importable on CPython by name, and paho and the test broker need CPython's ssl.

What it does as MicroPython does, where CPython's ssl would differ:

- `load_verify_locations(cafile=None, cadata=None)`: a CA that does not parse raises
  ValueError("invalid cert"), not ssl.SSLError.
- `load_cert_chain(certfile, keyfile)`: files are read first (OSError when missing, as
  ssl.py's open), then the key is parsed before the certificate: ValueError("invalid
  key"), then ValueError("invalid cert").
- `wrap_socket(sock, server_side=False, do_handshake_on_connect=True,
  server_hostname=None)` returns a socket with MicroPython's stream methods: `write`,
  `read`, `readinto` return None where they would block (never SSLWantReadError), and
  with do_handshake_on_connect=False the handshake runs inside them.
- A peer certificate that does not verify: the read or write that meets it raises
  ValueError with mbedTLS's words ("The certificate is not correctly signed by the trusted
  CA", seen on MicroPython 1.28; for a name that does not match, mbedTLS's CN words, not
  seen on a board), and every later call on that socket raises OSError(-9984)
  (MBEDTLS_ERR_X509_CERT_VERIFY_FAILED).

- `select.poll` (host_tools/virtual/mpselect.py) asks the socket as modtls_mbedtls.c's ioctl
  does: POLLNVAL once closed or after a failed call; POLLIN at once while the library
  holds bytes not yet read (a record read whole, handed out in smaller reads), which the
  raw socket's poll cannot see; while the handshake waits for the other direction (a
  read that must first write, a write that must first read), that direction stands in.

Left as CPython has them: any other ssl.SSLError (an OSError, as MicroPython's are: only
the number differs), and a key that does not match its certificate (CPython refuses it
in load_cert_chain; mbedTLS only fails the handshake). Client side only.
"""
import os
import ssl as _ssl
import tempfile

PROTOCOL_TLS_CLIENT = 0
PROTOCOL_TLS_SERVER = 1
CERT_NONE = 0
CERT_OPTIONAL = 1
CERT_REQUIRED = 2

_POLL_RD = 0x0001  # MP_STREAM_POLL_RD, _WR: select.POLLIN, POLLOUT
_POLL_WR = 0x0004
VERIFY_FAILED = -9984  # MBEDTLS_ERR_X509_CERT_VERIFY_FAILED (-0x2700)
NOT_TRUSTED = "The certificate is not correctly signed by the trusted CA"
CN_MISMATCH = "The certificate Common Name (CN) does not match with the expected CN"
_HOSTNAME_MISMATCH = 62  # OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH


def _read(f):
    if isinstance(f, str):
        with open(f, "rb") as fh:  # OSError, as micropython-lib's ssl.py
            return fh.read()
    return bytes(f)


def _pem(data):
    return data.lstrip().startswith(b"-----BEGIN")


class SSLContext:
    def __init__(self, protocol=PROTOCOL_TLS_CLIENT):
        if protocol != PROTOCOL_TLS_CLIENT:
            raise ValueError("mpssl: client side only")
        self._ctx = _ssl.SSLContext(_ssl.PROTOCOL_TLS_CLIENT)
        self.verify_mode = CERT_NONE  # ssl.py's default; net.py asks for CERT_REQUIRED

    @property
    def verify_mode(self):
        return self._mode

    @verify_mode.setter
    def verify_mode(self, mode):
        self._mode = mode
        self._ctx.check_hostname = mode == CERT_REQUIRED
        self._ctx.verify_mode = (_ssl.CERT_NONE, _ssl.CERT_OPTIONAL, _ssl.CERT_REQUIRED)[mode]

    def load_verify_locations(self, cafile=None, cadata=None):
        data = _read(cafile) if cafile else bytes(cadata)
        try:
            self._ctx.load_verify_locations(cadata=data.decode() if _pem(data) else data)
        except (_ssl.SSLError, ValueError, UnicodeDecodeError):
            raise ValueError("invalid cert") from None

    def load_cert_chain(self, certfile, keyfile):
        from cryptography import x509
        from cryptography.hazmat.primitives import serialization as ser

        cert, key = _read(certfile), _read(keyfile)
        try:
            k = (ser.load_pem_private_key if _pem(key) else ser.load_der_private_key)(key, None)
        except (ValueError, TypeError):
            raise ValueError("invalid key") from None
        try:
            load = x509.load_pem_x509_certificate if _pem(cert) else x509.load_der_x509_certificate
            c = load(cert)
        except ValueError:
            raise ValueError("invalid cert") from None
        # CPython takes files only: both as PEM in one, gone once loaded
        fd, path = tempfile.mkstemp(suffix=".pem")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(c.public_bytes(ser.Encoding.PEM))
                f.write(k.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8,
                                        ser.NoEncryption()))
            self._ctx.load_cert_chain(path)
        finally:
            os.unlink(path)

    def wrap_socket(self, sock, server_side=False, do_handshake_on_connect=True,
                    server_hostname=None):
        if server_side:
            raise ValueError("mpssl: client side only")
        s = SSLSocket(self._ctx.wrap_socket(sock, server_hostname=server_hostname,
                                            do_handshake_on_connect=False))
        if do_handshake_on_connect:
            s._op(s._s.do_handshake)  # done on a blocking socket; on the first I/O if not
        return s


class SSLSocket:
    def __init__(self, s):
        self._s = s
        self._failed = False
        self._want = 0   # poll_mask: the direction the handshake waits for (mpselect's)

    # fn's result; None for would-block; the verification failure as mbedTLS reports it.
    def _op(self, fn, *args):
        if self._failed:
            raise OSError(VERIFY_FAILED)
        self._want = 0
        try:
            return fn(*args)
        except _ssl.SSLWantReadError:
            if fn == self._s.send:
                self._want = _POLL_RD
            return None
        except _ssl.SSLWantWriteError:
            if fn != self._s.send:
                self._want = _POLL_WR
            return None
        except _ssl.SSLCertVerificationError as e:
            self._failed = True
            raise ValueError(CN_MISMATCH if e.verify_code == _HOSTNAME_MISMATCH
                             else NOT_TRUSTED) from None

    def write(self, data):
        return self._op(self._s.send, data)

    def read(self, n):
        return self._op(self._s.recv, n)

    def readinto(self, buf, n=None):
        return self._op(self._s.recv_into, buf, n or 0)

    def close(self):
        self._s.close()

    # MP_STREAM_POLL, as modtls_mbedtls.c answers it (mpselect asks).
    def mp_poll(self, mask):
        import mpselect
        if self._s.fileno() < 0 or self._failed:
            return mpselect.POLLNVAL
        saved = 0
        if self._want and mask & (_POLL_RD | _POLL_WR):
            saved = mask & (_POLL_RD | _POLL_WR)
            mask = (mask & ~saved) | self._want
        ret = 0
        if mask & _POLL_RD and self._s.pending():
            if mask == _POLL_RD:
                return _POLL_RD
            ret = _POLL_RD
        ret |= mpselect.ask_socket(self._s, mask)
        if ret & self._want:
            ret |= saved
        return ret
