"""The agent as a Windows service on the Hyper-V host, and the move from the C# agent.

Everything here runs on any OS but two modules:

- :mod:`plan` and :mod:`steps`: what ``service install|remove|start|stop`` do, as data
  (printed by ``--dry-run``), carried out against the :mod:`host` protocol; :mod:`tools`
  holds the command lines of ``netsh``, ``sc.exe`` and ``schtasks``; :mod:`paths` the names
  and places; :mod:`status` what ``service status`` shows.
- :mod:`runner` and :mod:`readiness`: the service's body (wait for Hyper-V, serve, stop).
- :mod:`csharp`, :mod:`importing` and :mod:`tomltext`: ``service import-config``.
- :mod:`commands`: the ``service`` command group.

Windows only, imported there only: :mod:`windows` (the host protocol on pywin32 and the
system tools) and :mod:`framework` (pywin32's service callbacks).
"""
