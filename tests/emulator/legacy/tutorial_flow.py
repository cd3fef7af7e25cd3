"""The tutorial's flow through the legacy SDK (azure-batch 6.0, api-version 2018-12-01.8.0):
``BatchServiceClient``, ``pool.add``, ``job.add``, ``task.add_collection`` and polling
``task.list`` until every task completed. Run in its own interpreter, with the legacy SDK first on
``sys.path`` (it cannot share one with azure-batch 15). Arguments: endpoint, account, key, input
blob SAS URL, output container SAS URL. Prints one JSON line of what it saw."""

import json
import sys
import time

import azure.batch.models as batchmodels
from azure.batch import BatchServiceClient
from azure.batch.batch_auth import SharedKeyCredentials

endpoint, account, key, input_url, output_url = sys.argv[1:6]
client = BatchServiceClient(SharedKeyCredentials(account, key), batch_url=endpoint)
assert client.api_version == "2018-12-01.8.0", client.api_version

client.pool.add(batchmodels.PoolAddParameter(
    id="LegacyPool",
    virtual_machine_configuration=batchmodels.VirtualMachineConfiguration(
        image_reference=batchmodels.ImageReference(publisher="Canonical", offer="UbuntuServer", sku="18.04-LTS",
                                                   version="latest"),
        node_agent_sku_id="batch.node.ubuntu 18.04"),
    vm_size="STANDARD_A1_v2",
    target_dedicated_nodes=2,
    start_task=batchmodels.StartTask(
        command_line="/bin/bash -c 'echo ready'",
        wait_for_success=True,
        user_identity=batchmodels.UserIdentity(auto_user=batchmodels.AutoUserSpecification(
            scope=batchmodels.AutoUserScope.pool, elevation_level=batchmodels.ElevationLevel.admin)),
    ),
))
client.job.add(batchmodels.JobAddParameter(id="LegacyJob", pool_info=batchmodels.PoolInformation(pool_id="LegacyPool")))
tasks = [
    batchmodels.TaskAddParameter(
        id=f"Task{i}",
        command_line=f"/bin/bash -c \"tr a-z A-Z < input.txt > out{i}.txt\"",
        resource_files=[batchmodels.ResourceFile(http_url=input_url, file_path="input.txt")],
        output_files=[batchmodels.OutputFile(
            file_pattern=f"out{i}.txt",
            destination=batchmodels.OutputFileDestination(
                container=batchmodels.OutputFileBlobContainerDestination(container_url=output_url)),
            upload_options=batchmodels.OutputFileUploadOptions(
                upload_condition=batchmodels.OutputFileUploadCondition.task_success)),
        ],
    )
    for i in range(3)
]
added = client.task.add_collection("LegacyJob", tasks)
statuses = sorted(str(getattr(r.status, "value", r.status)) for r in added.value)

deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    listed = list(client.task.list("LegacyJob"))
    if listed and all(t.state == batchmodels.TaskState.completed for t in listed):
        break
    time.sleep(0.2)
counts = client.job.get_task_counts("LegacyJob")
task = client.task.get("LegacyJob", "Task0")
client.job.delete("LegacyJob")
client.pool.delete("LegacyPool")
print(json.dumps({
    "statuses": statuses,
    "states": sorted(str(getattr(t.state, "value", t.state)) for t in listed),
    "exit_codes": sorted(t.execution_info.exit_code for t in listed),
    "succeeded": counts.succeeded,
    "upload_condition": str(getattr(task.output_files[0].upload_options.upload_condition, "value",
                                    task.output_files[0].upload_options.upload_condition)),
}))
