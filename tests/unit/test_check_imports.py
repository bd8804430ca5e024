"""scripts/check_imports.py on tiny synthetic trees: it finds a cycle through a function-level
import, ignores one that only ``TYPE_CHECKING`` runs, and names each layer crossed."""

from __future__ import annotations

import importlib.util
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_imports.py"


@pytest.fixture(scope="module")
def checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_imports", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def write(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


def test_a_clean_tree_passes(checker: ModuleType, tmp_path: Path) -> None:
    server = write(
        tmp_path / "server",
        {
            "groundwire/server/__init__.py": "",
            "groundwire/server/app.py": "from groundwire.server import settings\n",
            "groundwire/server/settings.py": "import os\n",
            # Only type checkers run this import: no cycle at run time.
            "groundwire/server/types.py": """
                from typing import TYPE_CHECKING
                if TYPE_CHECKING:
                    from groundwire.server.app import thing
                """,
        },
    )
    write(server, {"groundwire/server/settings.py": "from groundwire.server import types\n"})
    assert checker.check([server], tmp_path) == []
    assert checker.main([str(server)]) == 0


def test_a_function_level_cycle_and_a_layer_crossing_are_reported(
    checker: ModuleType, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = write(
        tmp_path / "server",
        {
            "groundwire/server/__init__.py": "",
            "groundwire/server/cli.py": """
                def main():
                    from groundwire.tools.benchmark import command
                    return command
                """,
            "groundwire/clients/__init__.py": "",
            "groundwire/clients/llm.py": "from ..server import cli\n",  # relative, still seen
        },
    )
    tools = write(
        tmp_path / "tools",
        {
            "groundwire/tools/__init__.py": "",
            "groundwire/tools/benchmark/__init__.py": "",
            "groundwire/tools/benchmark/command.py": "from groundwire.server.cli import main\n",
            # A tool may use the contract and the client layer, and the test support.
            "groundwire/tools/benchmark/calls.py": """
                from groundwire.v1 import retrieval_pb2
                from groundwire.clients import llm
                from groundwire.testing.redis_process import free_port
                """,
        },
    )
    sdk = write(tmp_path / "sdks/python", {"groundwire/v1/retrieval_pb2.py": ""})
    problems = checker.check([server, tools, sdk], tmp_path)
    assert problems == [
        "server/groundwire/clients/llm.py:1: layer: groundwire.clients.llm (clients) imports "
        "groundwire.server.cli (server)",
        "server/groundwire/server/cli.py:3: layer: groundwire.server.cli (server) imports "
        "groundwire.tools.benchmark.command (tools)",
        "tools/groundwire/tools/benchmark/command.py:1: layer: "
        "groundwire.tools.benchmark.command (tools) imports groundwire.server.cli (server)",
        "cycle of 2 modules: groundwire.server.cli -> groundwire.tools.benchmark.command "
        "-> groundwire.server.cli",
    ]
    assert checker.main([str(server), str(tools), str(sdk)]) == 1
    assert "import check: 4 problem(s) in" in capsys.readouterr().out


def test_the_layer_of_each_distribution(checker: ModuleType) -> None:
    assert checker.layer_of("groundwire.testing.redis_process") == "testing"
    assert checker.layer_of("groundwire.tools.measure.target") == "tools"
    assert checker.layer_of("groundwire.tools.evaluation.run") == "tools"
    assert checker.layer_of("groundwire.testing.scripted_llm") == "testing"
    assert checker.layer_of("groundwire.testing.scripted_llm_protocol") == "testing"
    assert checker.layer_of("groundwire.serverless") is None
    assert checker.layer_of("groundwire.clients.llm") == "clients"
    assert checker.layer_of("groundwire.internal.v1.reindex_pb2") == "server"
    assert checker.layer_of("groundwire.sdk.errors") == "sdk"
