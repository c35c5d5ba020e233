"""File access on the Hyper-V host: local disks and UNC/SMB shares."""
