"""A socket guard for every Python process of a test (Ray's dashboard, workers, drivers):
with VERTICALS_NETGUARD_LOG set, a connection or datagram to an address outside loopback is
written to that file and refused, as a closed network would refuse it."""

import ipaddress
import os
import socket
import sys

_LOG = os.environ.get("VERTICALS_NETGUARD_LOG")


def _outside(address: object) -> bool:
    if not isinstance(address, tuple) or not address:
        return False  # a unix socket path
    host = str(address[0])
    try:
        ip = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return host != "localhost"  # a name: resolving it already left the machine
    return not (ip.is_loopback or ip.is_unspecified)


def _guard(name: str) -> None:
    original = getattr(socket.socket, name)

    def guarded(self: socket.socket, *args: object) -> object:
        address = args[-1] if name == "sendto" else args[0]
        if _outside(address):
            with open(_LOG, "a") as out:  # type: ignore[arg-type]
                out.write(f"{os.getpid()} {' '.join(sys.argv[:2])[:120]} {name} {address}\n")
            raise OSError(101, "network is unreachable (test guard)")
        return original(self, *args)

    setattr(socket.socket, name, guarded)


if _LOG:
    for _name in ("connect", "connect_ex", "sendto"):
        _guard(_name)
