"""ctrltrace installs and works on a machine with no C compiler: the accelerators are optional.

The wheel is built from a copy of the checkout with the compiler hidden (a PATH that holds no
``cc`` or ``gcc``, and ``CC=/nonexistent``), so setuptools fails to compile both extensions and
skips them; the test checks that it said so and that the wheel holds no compiled module. The
wheel then goes into a fresh virtualenv (its dependencies from pip's configured index and
cache), where ``ctrltrace --version``, a journal round trip and a span export run on the
pure-Python paths.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import venv
import zipfile
from pathlib import Path

from ctrltrace._version import __version__

ROOT = Path(__file__).parents[2]
EXTENSIONS = ("ctrltrace._picklerecords", "ctrltrace.exporters._otlpwire")

# Run inside the fresh virtualenv: a journal round trip and spans through the installed
# package's own pipeline to an in-memory exporter, encoded as the SDK would encode them.
SMOKE = textwrap.dedent(
    """
    import sys

    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans as sdk
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from ctrltrace import picklerecords
    from ctrltrace.exporters import otlpwire
    from ctrltrace.exporters.otlp_proto import encode_spans
    from ctrltrace.exporters.tracing import build_tracing
    from ctrltrace.journal import Journal, JournalWriter
    from ctrltrace.records import ObjectRef, Record, Stage

    assert not picklerecords.ACCELERATED and not otlpwire.ACCELERATED
    ref = ObjectRef("v1", "ConfigMap", "default", "web", "uid-1", "7", 1)
    event = Record(1_700_000_000.0, Stage.EVENT, "ADDED", object=ref)
    queued = Record(
        1_700_000_000.1, Stage.DISPATCH, "queued", controller="web", object=ref,
        request="default/web", cause_ids=(event.id,),
    )
    path = sys.argv[1]
    with JournalWriter(path) as writer:
        writer(event)
        writer(queued)
    with Journal(path) as journal:
        assert journal.about("default", "web") == [event, queued], journal.about("default", "web")

    exporter = InMemorySpanExporter()
    provider, sink, counter = build_tracing(exporter, service_name="smoke")
    sink(event)
    sink(queued)
    counter.shutdown()
    spans = exporter.get_finished_spans()
    assert [span.name for span in spans] == ["event ConfigMap", "dispatch web"], spans
    assert counter.exported == 2 and counter.dropped == 0
    assert encode_spans(spans) == sdk(spans).SerializeToString()
    print("smoke ok")
    """
)


def _source_copy(into: Path) -> Path:
    """The checkout's files (tracked, and new ones not ignored) without any build output."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the work tree, not yet in the index
        target = into / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    return into


def _run(command: list[str], env: dict[str, str], cwd: Path | None = None) -> str:
    done = subprocess.run(
        command, env=env, cwd=cwd, capture_output=True, text=True, timeout=540, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{output[-4000:]}"
    return output


def test_pip_installs_ctrltrace_without_a_compiler_and_it_works(tmp_path: Path) -> None:
    # No compiler: a PATH of one empty directory, and CC pointing nowhere.
    no_tools = tmp_path / "no-tools"
    no_tools.mkdir()
    hidden = {
        **{k: v for k, v in os.environ.items() if k != "CTRLTRACE_NO_ACCELERATORS"},
        "PATH": str(no_tools),
        "CC": "/nonexistent",
    }
    assert shutil.which("cc", path=hidden["PATH"]) is None
    assert shutil.which("gcc", path=hidden["PATH"]) is None

    source = _source_copy(tmp_path / "src")
    dist = tmp_path / "dist"
    built = _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-v", "-w", str(dist), str(source)],
        hidden,
    )
    for extension in EXTENSIONS:
        assert f'building extension "{extension}" failed' in built, built[-4000:]
    [wheel] = dist.glob("ctrltrace-*.whl")
    with zipfile.ZipFile(wheel) as contents:
        names = contents.namelist()
    assert not [name for name in names if name.endswith((".so", ".pyd"))], names
    assert "ctrltrace/picklerecords.py" in names
    assert "ctrltrace/exporters/otlpwire.py" in names

    environment = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(environment)
    bin_dir = environment / "bin"
    # The SDK's encoder too, which ctrltrace no longer needs: the smoke test compares with it.
    sdk_encoder = "opentelemetry-exporter-otlp-proto-common"
    _run([str(bin_dir / "python"), "-m", "pip", "install", str(wheel), sdk_encoder], hidden)

    # Out of the checkout from here on, so the installed package is imported, not the source.
    python = str(bin_dir / "python")
    report = _run([str(bin_dir / "ctrltrace"), "--version"], hidden, tmp_path)
    assert __version__ in report, report
    for extension in EXTENSIONS:
        assert f"pure Python ({extension} was not built)" in report, report
    smoke = tmp_path / "smoke.py"
    smoke.write_text(SMOKE)
    journal = tmp_path / "journal.db"
    output = _run([python, str(smoke), str(journal)], hidden, tmp_path)
    assert "smoke ok" in output
