"""The sweep's internals: its config, targets and work items, the Ray driver, the scoring actor and the result writer."""
