"""The emulated host served over WS-Management, as a Windows host serves WinRM."""
