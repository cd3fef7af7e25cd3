"""One handler module per resource of the Batch REST API (pools, jobs, tasks, nodes, files, and
the account-level operations), all built on :class:`~batchspec.emulator.handlers.base.Resource`."""
