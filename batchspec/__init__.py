"""batchspec: declarative parallel batch jobs for Azure Batch.

A spec (YAML or JSON) describes a pool, an input file set and a templated task command.
batchspec validates it (:mod:`batchspec.spec`), expands it into a plan (:mod:`batchspec.plan`)
and runs the plan (:mod:`batchspec.engine`) on a backend (:mod:`batchspec.backends`).
"""

from __future__ import annotations

__version__ = "0.1.0"
