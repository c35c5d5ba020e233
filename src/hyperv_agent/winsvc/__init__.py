"""The agent as a Windows service on the Hyper-V host, and the move from the C# agent.

Everything here is computed on any OS: the plan of steps ``service install`` carries out
(:mod:`plan`, :mod:`steps`), how the steps run against a host's service manager
(:mod:`host`, the protocol), the service's body (:mod:`runner`, :mod:`readiness`) and
the import of the C# agent's settings (:mod:`csharp`). Only :mod:`windows` (the service
manager, firewall and task scheduler through pywin32 and the system tools) and
:mod:`framework` (pywin32's service callbacks) run on Windows alone; they are imported
there only.
"""
