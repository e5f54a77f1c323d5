"""Prefect tasks: thin. Read through a contract, call core logic, write through a contract."""
