"""``hyperv-agent doctor``: whether a Hyper-V host is ready for the agent, and why not.

Against any backend (``wsman`` to a real host, the host's own ``wmi``, the emulator):
``checks`` reads (WinRM reachable and its limits, Hyper-V's namespace and services, every
class, property and method of ``hyperv.inventory``, the vSwitches, the local pool's folder
and free space, the host's files, clock skew), one line per check with its fix; with
``--deploy``, ``deploy`` plays a throwaway VM through its whole life and removes it.
"""
