"""Hyper-V operations written against the CIM seam; nothing here knows CloudStack."""
