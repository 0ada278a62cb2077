"""stepml: run a machine-learning pipeline on AWS Step Functions, on AWS, LocalStack or embedded."""

__version__ = "0.1.0"
