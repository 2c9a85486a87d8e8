"""The README's demo: the widgets controller under ``ctrltrace run --envtest``, then explain.

    python examples/demo.py [--journal PATH]

1. ``ctrltrace run --envtest examples/widgets.py:mgr`` starts a local kube-apiserver + etcd
   and the controller, journaling every record;
2. this script installs the Widget CRD and makes three changes:
   - creates Widget ``demo/plain`` (reconciled),
   - edits only a label of ``demo/plain`` (GenerationChanged drops that update),
   - creates Widget ``demo/flaky`` with ``spec.fail: once`` (fails, then succeeds on retry);
3. stops the controller (Ctrl-C, as a user would) and runs ``ctrltrace explain`` on both.
"""

from __future__ import annotations

import argparse
import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

HERE = Path(__file__).parent
NAMESPACE = "demo"


def _step(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _explain(journal: Path, target: str, *extra: str) -> subprocess.CompletedProcess[str]:
    command = ["ctrltrace", "explain", target, "--kind", "widget", "--journal", str(journal)]
    return subprocess.run([*command, *extra], capture_output=True, text=True, check=False)


def _wait_for_verdict(journal: Path, target: str, wanted: set[str], within: float = 60) -> str:
    deadline = time.monotonic() + within
    code = ""
    while time.monotonic() < deadline:
        answer = _explain(journal, target, "--json")
        if answer.stdout.strip():
            code = str(json.loads(answer.stdout)["verdict"]["code"])
            if code in wanted:
                return code
        time.sleep(0.5)
    raise SystemExit(f"{target}: verdict stayed {code or 'unavailable'}, expected {wanted}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--journal", type=Path, default=Path(".ctrltrace/demo.sqlite"))
    args = parser.parse_args()
    journal: Path = args.journal
    journal.unlink(missing_ok=True)

    _step("ctrltrace run --envtest examples/widgets.py:mgr")
    runner = subprocess.Popen(
        [
            "ctrltrace", "run", "--envtest", f"{HERE / 'widgets.py'}:mgr",
            "--journal", str(journal), "--namespace", NAMESPACE,
            "--metrics-bind-address", "0", "--health-probe-bind-address", "0",
        ],
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        kubeconfig = _kubeconfig_from(runner)
        api = config.new_client_from_config(config_file=kubeconfig)
        _make_changes(api)
        _wait_for_verdict(journal, f"{NAMESPACE}/plain", {"dropped_by_predicate"})
        _wait_for_verdict(journal, f"{NAMESPACE}/flaky", {"requeue_scheduled", "reconciled"})
    finally:
        runner.send_signal(signal.SIGINT)
        try:
            runner.wait(30)
        except subprocess.TimeoutExpired:
            runner.kill()

    for target, why in (
        (f"{NAMESPACE}/plain", "a label-only edit, dropped by GenerationChanged"),
        (f"{NAMESPACE}/flaky", "failed once, succeeded on the retry"),
    ):
        _step(f"ctrltrace explain {target} --kind widget   ({why})")
        answer = _explain(journal, target)
        print(answer.stdout, end="")
        print(f"(exit code {answer.returncode})")
    print(
        f"\nThe journal is {journal}; try: ctrltrace explain demo/plain --journal {journal} --json"
    )


def _kubeconfig_from(runner: subprocess.Popen[str]) -> str:
    assert runner.stderr is not None
    for line in runner.stderr:
        print(line, end="", file=sys.stderr)
        if line.startswith("kubeconfig: "):
            return line.removeprefix("kubeconfig: ").strip()
    raise SystemExit(
        f"ctrltrace run exited with code {runner.wait()} before the control plane was up"
    )


def _make_changes(api: client.ApiClient) -> None:
    crd: dict[str, Any] = json.loads((HERE / "widget-crd.json").read_text())
    client.ApiextensionsV1Api(api).create_custom_resource_definition(crd)
    client.CoreV1Api(api).create_namespace({"metadata": {"name": NAMESPACE}})
    widgets = client.CustomObjectsApi(api)

    def create(name: str, **spec: Any) -> None:
        body = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": name}}
        deadline = time.monotonic() + 30
        while True:  # the CRD takes a moment to be served
            try:
                widgets.create_namespaced_custom_object(
                    "example.com", "v1", NAMESPACE, "widgets", {**body, "spec": spec}
                )
            except ApiException as error:
                if error.status != 404 or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
            else:
                return

    _step("create widget demo/plain (replicas: 1)")
    create("plain", replicas=1)
    time.sleep(2)
    _step("label demo/plain (metadata only: generation stays 1)")
    widgets.patch_namespaced_custom_object(
        "example.com",
        "v1",
        NAMESPACE,
        "widgets",
        "plain",
        {"metadata": {"labels": {"tier": "web"}}},
    )
    _step("create widget demo/flaky (spec.fail: once)")
    create("flaky", replicas=2, fail="once")


if __name__ == "__main__":
    main()
