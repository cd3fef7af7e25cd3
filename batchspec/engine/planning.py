"""A spec's plan as the engine runs it: built here, or with a backend's blob lister when the
inputs are blobs in storage. Apart from :mod:`.run` so ``batchspec plan`` imports nothing of
running (events, reporters, downloads)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from .. import backends
from ..backends import RunOptions
from ..plan import Plan, build_plan
from ..spec import Spec, load_spec


def make_plan(spec_path: Path, overrides: Iterable[str] = (), backend: str = "auto",
              env: Mapping[str, str] | None = None) -> Plan:
    """The plan for a spec file, as ``batchspec plan`` shows it (no side effects)."""
    return plan_for(load_spec(spec_path), overrides, backend, env)


def plan_for(spec: Spec, overrides: Iterable[str] = (), backend: str = "auto",
             env: Mapping[str, str] | None = None) -> Plan:
    """The plan for a loaded spec (see :func:`make_plan`)."""
    environ = os.environ if env is None else env
    if spec.inputs is None or spec.inputs.container is None:  # only blobs in storage need a backend to plan
        return build_plan(spec, overrides)
    lister_backend = backends.create(backends.choose(backend, environ)[0], RunOptions(env=environ))
    try:
        return build_plan(spec, overrides, lister_backend.blob_lister())
    finally:
        lister_backend.close()
