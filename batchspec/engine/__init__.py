"""The engine: runs a plan on a backend from the registry, stage after stage.

:func:`.run.run` is what ``batchspec run`` calls, :func:`.planning.make_plan` what ``batchspec plan``
calls and :func:`.run.remove` what ``batchspec cleanup`` calls; :func:`.reporters.make_reporter`
chooses how progress is shown; :mod:`.observe` serves ``status``, ``logs`` and ``report``. The
package imports none of them itself: each command loads only what it uses.
"""
