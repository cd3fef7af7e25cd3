"""Autoscale: the formula language, the emulator's evaluations and runs, and validate's check."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from azure.batch import models as m
from azure.core.exceptions import HttpResponseError

from batchspec import autoscale
from batchspec.emulator.testing import batch_client, running_emulator
from batchspec.spec.validate import validate_file
from tests.emulator.helpers import IMAGE, create_job, wait_for, wait_pool

NOW = datetime(2026, 3, 2, 9, 30, tzinfo=timezone.utc)  # a Monday


def _ctx(**kwargs: object) -> autoscale.Context:
    return autoscale.Context(now=NOW, **kwargs)  # type: ignore[arg-type]


def _history(values: list[float]) -> object:
    samples = [(NOW - timedelta(seconds=30 * (len(values) - i)), v) for i, v in enumerate(values)]
    return lambda name: samples if name == "$PendingTasks" else []


def test_the_documented_formulas_evaluate_as_the_service_reports_them() -> None:
    time_based = (
        "$curTime = time();\n$workHours = $curTime.hour >= 8 && $curTime.hour < 18;\n"
        "$isWeekday = $curTime.weekday >= 1 && $curTime.weekday <= 5;\n"
        "$isWorkingWeekdayHour = $workHours && $isWeekday;\n$TargetDedicatedNodes = $isWorkingWeekdayHour ? 20:10;"
    )
    assert autoscale.evaluate(time_based, _ctx()).results == (
        "$TargetDedicatedNodes=20;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue;"
        "$curTime=2026-03-02T09:30:00.000Z;$isWeekday=1;$isWorkingWeekdayHour=1;$workHours=1"
    )
    pending = (
        "// Get pending tasks for the past 15 minutes.\n"
        "$samples = $PendingTasks.GetSamplePercent(TimeInterval_Minute * 15);\n"
        "$tasks = $samples < 70 ? max(0,$PendingTasks.GetSample(1)) : "
        "max( $PendingTasks.GetSample(1), avg($PendingTasks.GetSample(TimeInterval_Minute * 15)));\n"
        "$targetVMs = $tasks > 0? $tasks:max(0, $TargetDedicatedNodes/2);\n"
        "$TargetDedicatedNodes = max(0, min($targetVMs, 20));\n$NodeDeallocationOption = taskcompletion;"
    )
    few = autoscale.evaluate(pending, _ctx(history=_history([3, 5]), target_dedicated=6))
    assert (few.target_dedicated, few.deallocation) == (5, "taskcompletion")  # too few samples: the last one
    full = autoscale.evaluate(pending, _ctx(history=_history([40.0] * 29 + [10.0])))
    assert full.target_dedicated == 20 and full.variables["$samples"] == 100.0
    idle = autoscale.evaluate(pending, _ctx(history=_history([0.0] * 30), target_dedicated=6))
    assert idle.target_dedicated == 3  # half the current target when nothing waits
    # The legacy alias is accepted; the full name wins over it.
    assert autoscale.evaluate("$TargetDedicated = 4;", _ctx()).target_dedicated == 4
    assert autoscale.evaluate("$TargetDedicated = 4; $TargetDedicatedNodes = 2", _ctx()).target_dedicated == 2


@pytest.mark.parametrize(
    ("formula", "where", "message"),
    [
        ("$TargetDedicatedNodes = ", (1, 25), "Expected an expression but found the end of the formula"),
        ("a = 1;\nb = (a + 2;\n", (2, 11), "Expected ')' but found ';'"),
        ("x = floor(2)", (1, 5), "Unknown function 'floor'"),
        ("$PendingTasks = 3", (1, 1), "$PendingTasks is read-only"),
        ("a = 1 # 2", (1, 7), "Unexpected character '#'"),
        ("x = 1;\ny = z + 1", (2, 5), "Undefined variable z"),
    ],
)
def test_malformed_formulas_are_located(formula: str, where: tuple[int, int], message: str) -> None:
    with pytest.raises(autoscale.FormulaError) as raised:
        autoscale.check(formula)
    assert (raised.value.line, raised.value.column) == where
    assert raised.value.message == message


def test_evaluation_errors() -> None:
    with pytest.raises(autoscale.FormulaError) as samples:
        autoscale.evaluate("a = 1;\nx = $PendingTasks.GetSample(TimeInterval_Minute * 10, 70);", _ctx())
    assert samples.value.kind == "samples"
    expected = "Line 2, Col 19: Insufficient data from data set: $PendingTasks wanted 70%, received 0%"
    assert str(samples.value) == expected
    with pytest.raises(autoscale.FormulaError, match="must not be negative"):
        autoscale.evaluate("$TargetLowPriorityNodes = 0 - 2", _ctx())
    with pytest.raises(autoscale.FormulaError, match="sample set"):
        autoscale.evaluate("$TargetDedicatedNodes = $PendingTasks + 1", _ctx())
    stopped = autoscale.evaluate("$TargetDedicatedNodes = 3; stop(); $TargetDedicatedNodes = 9", _ctx())
    assert stopped.target_dedicated == 3


def test_validate_locates_a_formula_error_in_the_spec(tmp_path: Path) -> None:
    spec = (Path(__file__).parents[2] / "specs" / "mp4-to-mp3-autoscale.yaml").read_text()
    bad = tmp_path / "bad.yaml"
    bad.write_text(spec.replace("min(5, pending)", "min(5, pendng)"))
    _doc, problems = validate_file(bad)
    assert [(p.line, p.path, p.message) for p in problems] == [
        (20, "$.pool.autoscale.formula", "autoscale formula, line 5 column 34: Undefined variable pendng")
    ]
    line = bad.read_text().splitlines()[problems[0].line - 1]
    assert line[problems[0].column - 1 :].startswith("pendng")


FORMULA = (
    "$TargetLowPriorityNodes = min(3, max(0, $PendingTasks.GetSample(1))); $NodeDeallocationOption = taskcompletion"
)


def _autoscale_pool(client: object, formula: str = FORMULA, interval: timedelta = timedelta(minutes=5)) -> None:
    client.create_pool(  # type: ignore[attr-defined]
        m.BatchPoolCreateOptions(
            id="auto", vm_size="standard_d2s_v3", virtual_machine_configuration=IMAGE,
            enable_auto_scale=True, auto_scale_formula=formula, auto_scale_evaluation_interval=interval,
        )
    )


def test_an_autoscale_pool_follows_its_tasks_up_and_back_to_zero() -> None:
    # Service time runs 100x: a 5-minute interval passes in 3 s, samples come every 0.3 s.
    with running_emulator(nodes=4, time_scale=100) as emu:
        client = batch_client(emu)
        _autoscale_pool(client)
        created = client.get_pool("auto")
        assert created.auto_scale_run is not None  # evaluated at creation, as on the service
        assert created.auto_scale_run.results == (
            "$TargetDedicatedNodes=0;$TargetLowPriorityNodes=0;$NodeDeallocationOption=taskcompletion"
        )
        create_job(client, pool_id="auto")
        client.create_tasks("job", [m.BatchTaskCreateOptions(id=f"t{i}", command_line="/bin/sleep 0.5")
                                    for i in range(5)])

        up = wait_pool(client, "auto", lambda p: p.current_low_priority_nodes == 3, timeout=30)
        assert up.target_low_priority_nodes == 3
        wait_for(lambda: client.get_job_task_counts("job").task_counts.completed == 5, timeout=30)
        down = wait_pool(client, "auto", lambda p: p.current_low_priority_nodes == 0, timeout=30)
        assert down.target_low_priority_nodes == 0 and down.auto_scale_run is not None
        assert down.auto_scale_run.results is not None and "$TargetLowPriorityNodes=0" in down.auto_scale_run.results

        run = client.evaluate_pool_auto_scale(
            "auto", m.BatchPoolEvaluateAutoScaleOptions(auto_scale_formula="$TargetDedicatedNodes = 2; x = 1")
        )
        assert run.results == "$TargetDedicatedNodes=2;$TargetLowPriorityNodes=0;$NodeDeallocationOption=requeue;x=1"
        failed = client.evaluate_pool_auto_scale(
            "auto", m.BatchPoolEvaluateAutoScaleOptions(
                auto_scale_formula="$TargetDedicatedNodes = avg($PendingTasks.GetSample(TimeInterval_Hour * 9, 90))"
            )
        )
        assert failed.error is not None and failed.error.code == "InsufficientSampleData"
        assert failed.error.message == "Autoscale evaluation failed due to insufficient sample data"
        assert client.get_pool("auto").target_dedicated_nodes == 0  # evaluation alone changes nothing


def test_autoscale_settings_the_service_refuses() -> None:
    with running_emulator() as emu:
        client = batch_client(emu)
        with pytest.raises(HttpResponseError) as syntax:
            _autoscale_pool(client, "$TargetDedicatedNodes = (1")
        assert syntax.value.status_code == 400 and syntax.value.error is not None
        assert syntax.value.error.code == "AutoScalingFormulaSyntaxError"
        with pytest.raises(HttpResponseError) as short:
            _autoscale_pool(client, interval=timedelta(minutes=1))
        assert short.value.error is not None and short.value.error.code == "InvalidPropertyValue"
        _autoscale_pool(client)
        with pytest.raises(HttpResponseError) as manual:
            client.begin_resize_pool("auto", m.BatchPoolResizeOptions(target_dedicated_nodes=1), polling_interval=0)
        assert manual.value.status_code == 409
        client.disable_pool_auto_scale("auto")
        pool = client.get_pool("auto")
        assert pool.enable_auto_scale is False and pool.auto_scale_formula is None and pool.auto_scale_run is None
        with pytest.raises(HttpResponseError) as disabled:
            client.evaluate_pool_auto_scale("auto", m.BatchPoolEvaluateAutoScaleOptions(auto_scale_formula="a = 1"))
        assert disabled.value.status_code == 409
