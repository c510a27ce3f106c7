"""Client certificates with hostile names, signed by the test CA with the openssl CLI.

The subjectAltName is written in the extension's raw DER form, so that a name can hold any byte
(a quote, a backslash, a control byte) or be empty, which the textual `URI:...` form refuses.
"""
import os
import subprocess

# GeneralName tags ([n] IMPLICIT IA5String, context-specific and primitive).
_TAGS = {"DNS": 0x82, "URI": 0x86}


def _der(tag, content):
    n = len(content)
    if n < 0x80:
        length = bytes([n])
    else:
        digits = n.to_bytes((n.bit_length() + 7) // 8, "big")
        length = bytes([0x80 | len(digits)]) + digits
    return bytes([tag]) + length + content


def san_der(names):
    """GeneralNames DER for [(kind, value)], kind "URI" or "DNS", value str or bytes."""
    body = b"".join(_der(_TAGS[kind], v.encode("latin-1") if isinstance(v, str) else v)
                    for kind, v in names)
    return _der(0x30, body)


def subj_arg(rdns):
    """An `openssl req -subj` argument for [(type, value)]: '/', '+' and '\\' escaped."""
    out = ""
    for t, v in rdns:
        out += "/" + t + "=" + v.replace("\\", "\\\\").replace("/", "\\/").replace("+", "\\+")
    return out


def make_client(certs, name, rdns, san=None, extra_ext=()):
    """Writes NAME.pem and NAME.key in the Certs directory `certs`: a clientAuth leaf signed by
    its ca.pem. rdns: [(type, value)] in order; san: [(kind, value)] or None; extra_ext: further
    extension lines. Returns the certificate's path."""
    d = certs.dir
    key, csr, ext, pem = (os.path.join(d, name + s) for s in (".key", ".csr", ".ext", ".pem"))
    subprocess.run(["openssl", "genpkey", "-algorithm", "EC", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-out", key], check=True, capture_output=True)
    subprocess.run(["openssl", "req", "-new", "-key", key, "-subj", subj_arg(rdns),
                    "-out", csr], check=True, capture_output=True)
    lines = ["extendedKeyUsage=clientAuth", "basicConstraints=CA:FALSE"]
    if san is not None:
        lines.append("subjectAltName=DER:" + san_der(san).hex())
    lines += list(extra_ext)
    with open(ext, "w") as f:
        f.write("\n".join(lines) + "\n")
    subprocess.run(["openssl", "x509", "-req", "-in", csr, "-CA", certs.path("ca.pem"),
                    "-CAkey", certs.path("ca.key"), "-CAcreateserial", "-days", "2", "-sha256",
                    "-extfile", ext, "-out", pem], check=True, capture_output=True)
    os.remove(csr)
    os.remove(ext)
    os.chmod(pem, 0o644)
    return pem


def rfc2253_subject(pem):
    """The subject as `openssl x509 -nameopt RFC2253` prints it (what XFCC's Subject carries)."""
    r = subprocess.run(["openssl", "x509", "-in", pem, "-noout", "-subject", "-nameopt", "RFC2253"],
                       check=True, capture_output=True)
    line = r.stdout.decode("utf-8").rstrip("\n")
    assert line.startswith("subject="), line
    return line[len("subject="):]
