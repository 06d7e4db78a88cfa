"""The real service in a subprocess for the tests (see ``service.process``)."""

from service.process import ROOT, ServerProcess, free_port, running_server, start_server

__all__ = ["ROOT", "ServerProcess", "free_port", "running_server", "start_server"]
