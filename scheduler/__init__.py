"""The orchestrator side: the cron scheduler and the run-coordinator."""
