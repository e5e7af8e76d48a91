"""Errors of the pipeline's own plumbing.

```
CallstreamError
 ├─ ConfigurationError   bad settings, missing topic, unknown provider in settings: fatal,
 │   │                   the worker stops on purpose with one clear line
 │   └─ BrokerUnavailable  no Kafka answers at the configured bootstrap servers
 └─ PublishError         an outcome could not be written to its topic (the offset is not
                         committed, so the request is processed again after a restart)
```
"""

from __future__ import annotations


class CallstreamError(Exception):
    """Base class for errors that end with a clear message, not a traceback."""


class ConfigurationError(CallstreamError):
    """A setting, topic or provider declaration is wrong. Operator action: fix the config."""


class BrokerUnavailable(ConfigurationError):
    """No broker answers at the bootstrap servers. Operator action: start one or fix the
    address."""


class PublishError(CallstreamError):
    """An outcome could not be published."""
