"""`--runner` values: local, dask (a cluster made for the run), dask:ADDRESS."""

import pytest

from neuronatlas.adapters.runners import Runner, check_runner, parse_runner
from neuronatlas.errors import InputError


def test_runner_values() -> None:
    assert parse_runner("local") == Runner("local")
    assert parse_runner("dask") == Runner("dask", None)
    assert parse_runner("dask:tcp://10.0.0.5:8786") == Runner("dask", "tcp://10.0.0.5:8786")
    assert parse_runner("dask:scheduler:8786") == Runner("dask", "tcp://scheduler:8786")
    assert str(parse_runner("dask:scheduler:8786")) == "dask:tcp://scheduler:8786"
    for bad in ("ray", "local:4", "", "threads"):
        with pytest.raises(InputError, match=f"--runner {bad}: expected local, dask or dask:ADDRESS"):
            parse_runner(bad)


def test_a_dask_run_needs_a_prefect_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(InputError, match="needs a Prefect server"):
        check_runner("dask")
    assert check_runner("local") == Runner("local")
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:4200/api")
    assert check_runner("dask").distributed
