"""Configuration errors of auth: raised while building a signer, never on the hot path.

```
ValueError
 └─ AuthConfigError          a signer cannot be built from its config
     └─ SecretResolutionError   a secret reference names a missing variable or file
```
Failures while *using* credentials (token endpoint refusing, 401s) are ``providers.errors``
(``AuthFailed``, ``ProviderUnavailable``, ``RateLimited``). Messages never contain secrets.
"""

from __future__ import annotations


class AuthConfigError(ValueError):
    """The auth configuration cannot be turned into a signer.

    Operator action: fix the provider's ``auth`` section or the environment it refers to.
    """


class SecretResolutionError(AuthConfigError):
    """A secret reference (``env:``, ``file:``, ``dir:``) cannot be resolved."""
