"""CIM over WS-Management (WinRM): the ``wsman`` backend and the XML both sides share.

``backend.WsmanCim`` implements the seam on pypsrp's HTTP transport (``transport``);
``names``, ``reading``, ``writing``, ``classxml``, ``envelope`` and ``faultxml`` hold the
CIM layer written here (resource URIs and EPRs, instance and value XML, CIM-XML class
metadata, request bodies, faults), which the emulator's WinRM face reuses. Only
``transport`` and ``backend`` import pypsrp.
"""
