"""The worker: consumes task queues, runs extractor and loader plugins, reports outcomes."""
