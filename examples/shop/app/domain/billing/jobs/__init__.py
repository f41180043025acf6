"""Per-domain defaults: every billing job runs on the "billing" queue with 3 attempts."""

job_defaults = {"queue": "billing", "retries": 3, "timeout": 30}
