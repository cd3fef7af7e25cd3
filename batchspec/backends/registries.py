"""Container registry logins, as a spec names them: variable names in the spec, values from the
environment (never from the spec, never printed), or a managed identity of the pool (Azure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..containers import Credentials, registry_of
from ..errors import BackendError
from ..redact import remember_secret
from ..spec.model import Registry


def login(registry: Registry, env: Mapping[str, str]) -> Credentials | None:
    """The user name and password of ``registry`` from ``env``; None for a managed identity.
    Raises BackendError naming a variable that is not set."""
    if registry.identity is not None or registry.username_env is None or registry.password_env is None:
        return None
    missing = [name for name in (registry.username_env, registry.password_env) if not env.get(name)]
    if missing:
        raise BackendError(
            f"registry {registry.server}: environment variable{'s' if len(missing) > 1 else ''} "
            f"{' and '.join(missing)} {'are' if len(missing) > 1 else 'is'} not set",
            f"export {missing[0]}=... before the run (pool.container.registries names it; the value never goes "
            "in the spec)")
    password = env[registry.password_env]
    remember_secret(password)
    return Credentials(registry.server, env[registry.username_env], password)


def registry_for(image: str, registries: Sequence[Registry]) -> Registry | None:
    """The registry of ``registries`` that ``image`` is pulled from, if any."""
    server = registry_of(image).lower()
    return next((r for r in registries if r.server.lower().rstrip("/") == server), None)
