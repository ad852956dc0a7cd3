"""The check a joining host makes of a master it has no CA for yet (mgpu_core.joining): the CA
the master sends must be the pinned one, and the certificate the TLS channel showed must be
that CA's, current, and for the host dialled. Here, not in core: it needs the ``cryptography``
package, which only the daemons use.
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from mgpu_core.errors import AuthenticationFailed
from mgpu_core.joining import ca_hash


def discovery_context() -> ssl.SSLContext:
    """TLS that checks no certificate, for a join's first contact only: the host has no CA yet.
    What it would have checked, :func:`check_master` checks once the master has sent its CA,
    and the handshake's proofs are bound to this very channel: a relay with any other
    certificate learns nothing and gets no node key."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def check_master(ca_pem: str, leaf_der: bytes, *, host: str, pinned: str) -> None:
    """That ``ca_pem`` is the pinned CA and that ``leaf_der`` (the certificate the TLS channel
    showed) is a current certificate it issued for ``host``; AuthenticationFailed otherwise.
    After this, the host trusts the CA as if it had been copied over by hand."""
    if ca_hash(ca_pem) != pinned:
        raise AuthenticationFailed(
            f"the master's CA certificate does not match --ca-hash {pinned}: "
            "this is not the master that printed the command (or the CA was replaced)"
        )
    try:
        ca = x509.load_pem_x509_certificate(ca_pem.encode())
        leaf = x509.load_der_x509_certificate(leaf_der)
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError) as exc:
        raise AuthenticationFailed(f"the master's certificate is not from its CA: {exc}") from None
    except InvalidSignature:
        raise AuthenticationFailed("the master's certificate is not signed by its CA") from None
    now = datetime.datetime.now(datetime.UTC)
    for what, cert in (("CA", ca), ("certificate", leaf)):
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise AuthenticationFailed(f"the master's {what} is not valid now (check the clocks)")
    if not _names(leaf, host):
        raise AuthenticationFailed(
            f"the master's certificate is not for {host}: use a name it was made for "
            "(mgpu_master --tls-name, or mgpu_master join-token --host)"
        )


def _names(cert: x509.Certificate, host: str) -> bool:
    """Whether the certificate's subject alternative names include ``host``."""
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        wanted = host.lower().rstrip(".")
        return any(n.lower() == wanted for n in names.get_values_for_type(x509.DNSName))
    return address in names.get_values_for_type(x509.IPAddress)
