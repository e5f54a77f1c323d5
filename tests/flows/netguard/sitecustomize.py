"""Loaded by every Python process of a guarded test run (via PYTHONPATH): refuses, and records,
any connection or name lookup that leaves the loopback interface. Nothing leaves the machine:
the check runs before the real call."""

import ipaddress
import os
import socket

_LOG = os.environ["NETGUARD_LOG"]
_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", ""}


def _record(line: str) -> None:
    with open(_LOG, "a") as handle:
        handle.write(f"{os.getpid()} {line}\n")


def is_loopback(host: object) -> bool:
    if isinstance(host, bytes):
        host = host.decode()
    if host is None or (isinstance(host, str) and host.lower() in _LOCAL_NAMES):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False


_connect, _connect_ex, _getaddrinfo = socket.socket.connect, socket.socket.connect_ex, socket.getaddrinfo


def _guarded(original):  # type: ignore[no-untyped-def]
    def call(self, address):  # type: ignore[no-untyped-def]
        if self.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(address[0]):
            _record(f"connect {address!r}")
            raise OSError("network access blocked by the test's guard")
        return original(self, address)

    return call


def _guarded_getaddrinfo(host, *args, **kwargs):  # type: ignore[no-untyped-def]
    if not is_loopback(host):
        _record(f"getaddrinfo {host!r}")
        raise socket.gaierror(socket.EAI_NONAME, "name lookup blocked by the test's guard")
    return _getaddrinfo(host, *args, **kwargs)


socket.socket.connect = _guarded(_connect)  # type: ignore[method-assign]
socket.socket.connect_ex = _guarded(_connect_ex)  # type: ignore[method-assign]
socket.getaddrinfo = _guarded_getaddrinfo
_record("guard active")
