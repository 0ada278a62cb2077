"""Code shared by the pipeline's Lambda functions (deployed as one layer).

Each stage's logic lives in ``pipeline_core.stages``; ``functions/<stage>/app.py`` only parses the event,
calls that logic and returns the typed result that is the contract with the next state.
"""
