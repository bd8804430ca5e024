"""Wire compatibility: a client generated from the previous release's protos still works
against the current server.

The previous release is the newest ``v*`` git tag. Its protos are compiled into a temporary
directory and a client built only from those stubs (in a separate interpreter, so they do not
mix with the current ones) runs capabilities, ingest, retrieve and a streamed Generate against
the live server. Until a release is tagged there is nothing to compare with and the test says
so; ``buf breaking`` against ``main`` guards the source contract meanwhile.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.live import REPO, LiveStack

OLD_CLIENT = r"""
import sys
import grpc
from groundwire.v1 import (capabilities_pb2, capabilities_pb2_grpc, documents_pb2,
    documents_pb2_grpc, generation_pb2, generation_pb2_grpc, retrieval_pb2, retrieval_pb2_grpc)

address, key = sys.argv[1], sys.argv[2]
auth = [("authorization", "Bearer " + key)]
with grpc.insecure_channel(address) as channel:
    caps = capabilities_pb2_grpc.CapabilitiesServiceStub(channel).GetCapabilities(
        capabilities_pb2.GetCapabilitiesRequest(), metadata=auth, timeout=10)
    assert caps.server_version
    doc = documents_pb2.Document(doc_id="compat", title="Tides",
        text="Tides are caused by the gravitational pull of the Moon.")
    summary = documents_pb2_grpc.DocumentServiceStub(channel).IngestDocuments(
        iter([documents_pb2.IngestDocumentsRequest(document=doc)]), metadata=auth, timeout=60)
    assert summary.failed == 0
    found = retrieval_pb2_grpc.RetrievalServiceStub(channel).Retrieve(
        retrieval_pb2.RetrieveRequest(query="what causes tides", top_k=1), metadata=auth,
        timeout=30)
    assert found.chunks[0].doc_id == "compat"
    frames = list(generation_pb2_grpc.GenerationServiceStub(channel).Generate(
        generation_pb2.GenerateRequest(query="what causes tides", bypass_cache=True),
        metadata=auth, timeout=60))
    kinds = [f.WhichOneof("frame") for f in frames]
    assert kinds[0] == "start" and kinds[-1] == "end", kinds
    assert frames[0].start.sources[0].doc_id == "compat"
print("old client ok")
"""


def previous_release() -> str | None:
    """The newest ``v*`` tag, or None."""
    result = subprocess.run(
        ["git", "describe", "--tags", "--abbrev=0", "--match", "v*"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or None


def compile_release_protos(tag: str, out: Path) -> None:
    """The Python stubs of ``tag``'s protos, in ``out``."""
    listing = subprocess.run(
        ["git", "ls-tree", "-r", "--name-only", tag, "protos/groundwire/v1"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    source = out / "protos"
    for name in listing:
        target = source / Path(name).relative_to("protos")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(
            subprocess.run(
                ["git", "show", f"{tag}:{name}"], cwd=REPO, capture_output=True, check=True
            ).stdout
        )
    stubs = out / "stubs"
    stubs.mkdir()
    files = [str(p.relative_to(source)) for p in source.rglob("*.proto")]
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{source}",
            f"--python_out={stubs}",
            f"--grpc_python_out={stubs}",
            *files,
        ],
        check=True,
    )


PREVIOUS_RELEASE = previous_release()


@pytest.mark.skipif(
    PREVIOUS_RELEASE is None, reason="no release is tagged yet (v*): nothing to compare with"
)
def test_a_client_of_the_previous_release_works_against_this_server(
    stack: LiveStack, tmp_path: Path
) -> None:
    assert PREVIOUS_RELEASE is not None
    compile_release_protos(PREVIOUS_RELEASE, tmp_path)
    env = stack.env("python")
    # Only the old stubs on the path: `-I` isolates the interpreter from the project's own.
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {str(tmp_path / 'stubs')!r}); exec({OLD_CLIENT!r})",
            env["GROUNDWIRE_TEST_ADDRESS"],
            env["GROUNDWIRE_TEST_API_KEY"],
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "old client ok" in result.stdout
