"""One small wrapper per AWS service, speaking the pipeline's domain verbs."""
