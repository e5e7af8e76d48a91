"""What provider files are trusted with: the secret references they may name, where they point.

Provider files are operator configuration, as trusted as code: a file can name any environment
variable or file as its secret and any ``base_url`` to send it to. Two opt-in limits narrow
that for files from ``provider_dirs``: an allow-list of secret references (here) and
``deny_private_networks``, checked on resolved addresses at connect time (``network.py``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator, Sequence
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from pydantic import SecretStr

from providers.auth.config import BasicAuth, OAuth2ClientCredentialsAuth
from providers.auth.secrets import canonical_ref, is_secret_ref
from providers.declaration import ProviderSpec
from providers.network import refusal
from providers.spec_file import SpecError

ALLOW_LIST_SETTING = "provider_secret_refs"


def secret_refs(spec: ProviderSpec) -> Iterator[tuple[str, str]]:
    """Each ``(field, reference)`` of ``spec`` that names a secret outside it.

    Covers every auth secret, the Basic username and static header values; literals are
    not references (their value is in the file itself).
    """
    fields: list[tuple[str, str]] = [
        (f"auth.{key}", value.get_secret_value())
        for key, value in dict(spec.auth).items()
        if isinstance(value, SecretStr)
    ]
    if isinstance(spec.auth, BasicAuth):
        fields.append(("auth.username", spec.auth.username))
    fields += [(f"headers.{name}", value) for name, value in spec.headers.items()]
    return ((field, ref) for field, ref in fields if is_secret_ref(ref))


def check_secret_refs(spec: ProviderSpec, allowed: Sequence[str], *, source: str) -> None:
    """Refuse a spec that names a secret reference outside ``allowed`` (glob patterns).

    Args:
        spec: a declaration read from a ``provider_dirs`` file.
        allowed: patterns such as ``dir:*`` or ``env:CALLSTREAM_SECRET_*``; empty allows all.
        source: the file's name, for the message.

    Raises:
        SpecError: one line naming the file, the field and the reference's scheme, never the
            reference itself (it can be the name of something the file should not know).
    """
    if not allowed:
        return
    for field, ref in secret_refs(spec):
        if not any(fnmatchcase(canonical_ref(ref), pattern) for pattern in allowed):
            scheme = ref.partition(":")[0]
            raise SpecError(
                f"{source}: {field}: this {scheme}: secret reference is not allowed by "
                f"{ALLOW_LIST_SETTING}"
            )


def exposure_warnings(
    specs: Iterable[ProviderSpec], *, deny_private_networks: bool = False
) -> list[str]:
    """One line per concern: providers whose base_url (or token_url) is a literal private
    address or plain ``http://`` (review finding 18). Empty when there is none.

    Host names are not resolved here: only the connect-time check can see what they resolve to.
    """
    private: list[str] = []
    plain: list[str] = []
    for spec in sorted(specs, key=lambda s: s.name):
        for label, url in _urls(spec):
            parts = urlsplit(url)
            kind = _literal_refusal(parts.hostname or "")
            if kind:
                private.append(f"{label} ({parts.hostname}: {kind})")
            if parts.scheme == "http":
                plain.append(label)
    lines = []
    if private:
        then = "refused: deny_private_networks" if deny_private_networks else "calls allowed"
        lines.append(f"providers pointing at private addresses ({then}): {', '.join(private)}")
    if plain:
        lines.append(f"providers over plain http:// (no TLS): {', '.join(plain)}")
    return lines


def _urls(spec: ProviderSpec) -> Iterator[tuple[str, str]]:
    yield spec.name, spec.base_url
    if isinstance(spec.auth, OAuth2ClientCredentialsAuth):
        yield f"{spec.name} token_url", spec.auth.token_url


def _literal_refusal(host: str) -> str | None:
    """Why a host written in the URL is not public: a literal address, or a localhost name."""
    if host == "localhost" or host.endswith(".localhost"):  # RFC 6761 §6.3
        return "loopback"
    try:
        return refusal(ipaddress.ip_address(host))
    except ValueError:
        return None  # a name: only its resolution, at connect time, can say
