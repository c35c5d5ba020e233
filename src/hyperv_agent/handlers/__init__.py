"""CloudStack verbs in Hyper-V terms, one module per area; dispatch turns errors into answers."""
