"""core/ is pure: importing it pulls in no orchestration, storage client, LLM client or GE."""

import subprocess
import sys

FORBIDDEN = ["prefect", "boto3", "botocore", "openai", "httpx", "great_expectations", "pyarrow.fs"]


def test_core_imports_no_io_library() -> None:
    code = (
        "import sys, pkgutil, importlib, neuronatlas.core as core\n"
        "for m in pkgutil.walk_packages(core.__path__, 'neuronatlas.core.'): importlib.import_module(m.name)\n"
        f"print([name for name in {FORBIDDEN!r} if name in sys.modules])"
    )
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "[]"


def test_importing_the_cli_reads_no_environment_and_starts_nothing() -> None:
    code = "import sys, neuronatlas.cli; print('prefect' in sys.modules, 'great_expectations' in sys.modules)"
    output = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert output.strip() == "False False"
