"""The CloudStack wire protocol: typed commands, answers and transfer objects; no I/O."""
