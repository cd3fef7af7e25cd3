"""The one factory of service errors: codes, statuses and messages as the service words them.

Every error the emulator answers is an :class:`ApiError` made here, rendered as the service's
error body (``odata.metadata``, ``code``, ``message{lang, value}`` with the request id and time,
and ``values``). Messages are the service's own (see the Batch status and error code reference);
an operation the emulator does not implement answers as the service answers an unknown URI,
with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from batchspec.emulator.wire import ERROR_METADATA, Json, iso


@dataclass
class ApiError(Exception):
    """An error answered with the service's error body."""

    status: int
    code: str
    message: str
    values: list[tuple[str, str]] = field(default_factory=list)

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


MESSAGES = {
    "PoolNotFound": "The specified pool does not exist.",
    "JobNotFound": "The specified job does not exist.",
    "TaskNotFound": "The specified task does not exist.",
    "NodeNotFound": "The specified node does not exist.",
    "NodeBeingRebooted": "The specified node is being rebooted",
    "NodeBeingStarted": "The specified node is being started",
    "TaskIdSameAsJobPreparationTask": "The specified task id is same as the job preparation task.",
    "TaskIdSameAsJobReleaseTask": "The specified task id is same as the job release task.",
    "FileNotFound": "The specified file does not exist.",
    "PoolExists": "The specified pool already exists.",
    "JobExists": "The specified job already exists.",
    "TaskExists": "The specified task already exists.",
    "PoolBeingDeleted": "The specified pool has been marked for deletion and is being reclaimed.",
    "JobBeingDeleted": "The specified job has been marked for deletion and is being garbage collected.",
    "JobBeingTerminated": "The specified job is being terminated.",
    "JobCompleted": "The specified job is already in a completed state.",
    "TaskCompleted": "The specified task is already in a completed state.",
    "OperationInvalidForCurrentState": "The specified operation is not valid for the current state of the resource.",
    "InvalidPropertyValue": "The value provided for one of the properties in the request body is invalid.",
    "MissingRequiredProperty": "A required property was not specified in the request body.",
    "InvalidRequestBody": "The specified Request Body is not syntactically valid.",
    "AuthenticationFailed": "Server failed to authenticate the request. Make sure the value of Authorization "
    "header is correctly formed including the signature.",
    "RequestBodyTooLarge": "The request body is too large and exceeds the maximum permissible limit.",
    "MissingRequiredQueryParameter": "A query parameter that's mandatory for this request is not specified.",
    "InvalidQueryParameterValue": "Value for one of the query parameters specified in the request URI is invalid.",
    "InvalidUri": "The requested URI does not represent any resource on the server.",
    "JobNotActive": "The specified job is not in active state.",
    "JobDisabled": "The specified job is disabled.",
    "JobPreparationTaskNotSpecified": "The specified job does not have job preparation task.",
    "JobReleaseTaskNotSpecified": "The specified job does not have job release task.",
    "TaskNotCompleted": "The specified task is not in a completed state, and the requested operation can be "
    "performed only on completed tasks.",
    "OperationNotValidOnNode": "The specified operation is not valid on the node.",
    "NodeAlreadyInTargetSchedulingState": "The specified node is already in the target scheduling state.",
    "PoolBeingResized": "The specified pool is being resized",
    "InvalidAutoScalingSettings": "The specified auto-scaling settings are not valid.",
    "AutoScalingFormulaSyntaxError": "The specified auto-scaling formula has a syntax error.",
    "AutoScaleFormulaTooLong": "The specified auto-scaling formula exceeds lengths limit.",
    "TooManyEnableAutoScaleRequests": "Too many Enable Pool AutoScale requests are issued on the pool.",
    "UnsupportedHttpVerb": "The resource doesn't support the specified HTTP verb.",
    "ServerBusy": "The server is currently unable to receive requests. Please retry your request.",
    "TaskDependenciesNotSpecifiedOnJob": "A task was specified as depending on other tasks, but the job did not "
    "specify that it would use task dependencies.",
    "TaskDependencyListTooLong": "A task was specified as depending on other tasks, but the list of dependencies "
    "was too long to be stored. The total stored length is limited to 64000 characters; the total length of task "
    "ids must be slightly less than this to allow for internal storage overhead. If you encounter this error, "
    "consider using task range dependencies instead.",
    "TooManyRequests": "The server is busy, please retry the request after some time.",
}


def error(status: int, code: str, *values: tuple[str, str], message: str | None = None) -> ApiError:
    return ApiError(status, code, message or MESSAGES[code], list(values))


def not_found(kind: str) -> ApiError:
    return error(404, f"{kind}NotFound")


def invalid_property(name: str, value: object, reason: str) -> ApiError:
    return error(
        400,
        "InvalidPropertyValue",
        ("PropertyName", name),
        ("PropertyValue", "" if value is None else str(value)),
        ("Reason", reason),
    )


def missing_property(name: str) -> ApiError:
    return error(400, "MissingRequiredProperty", ("PropertyName", name))


def invalid_body(reason: str) -> ApiError:
    return error(400, "InvalidRequestBody", ("Reason", reason))


def error_json(base_url: str, err: ApiError, request_id: str, ticks: int) -> Json:
    """The service's error body: ``odata.metadata``, ``code``, ``message{lang,value}``, ``values``."""
    body: Json = {
        "odata.metadata": f"{base_url}/{ERROR_METADATA}",
        "code": err.code,
        "message": {"lang": "en-US", "value": f"{err.message}\nRequestId:{request_id}\nTime:{iso(ticks)}"},
    }
    if err.values:
        body["values"] = [{"key": k, "value": v} for k, v in err.values]
    return body


def inner_error(err: ApiError, request_id: str, ticks: int) -> Json:
    """An error as embedded in a per-task ``addtaskcollection`` result (no odata.metadata)."""
    body: Json = {
        "code": err.code,
        "message": {"lang": "en-US", "value": f"{err.message}\nRequestId:{request_id}\nTime:{iso(ticks)}"},
    }
    if err.values:
        body["values"] = [{"key": k, "value": v} for k, v in err.values]
    return body


def unsupported(reason: str) -> ApiError:
    """An operation the emulator does not implement: the service's answer to an unknown URI, with
    the reason in the message (after the service's own sentence) and in ``values``."""
    return error(400, "InvalidUri", ("Reason", reason), message=f"{MESSAGES['InvalidUri']} {reason}")
