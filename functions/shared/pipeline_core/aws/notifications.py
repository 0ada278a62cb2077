"""Notifications: messages to the stack's SNS topic (the one the state machine's Notify states publish to)."""

from __future__ import annotations

from typing import Any

from pipeline_core.aws.clients import client, transient_errors_as

# SNS refuses a Subject longer than 100 characters (or with line breaks).
SUBJECT_MAX = 100


class Notifier:
    """Publish messages to one SNS topic."""

    def __init__(self, topic_arn: str, sns_client: Any | None = None) -> None:
        self._topic = topic_arn
        self._sns = sns_client or client("sns")

    def publish(self, subject: str, message: str) -> str:
        """Publish ``message`` (its ``subject`` cut to SNS's limit); the message id."""
        line = " ".join(subject.split())
        if len(line) > SUBJECT_MAX:
            line = line[: SUBJECT_MAX - 3] + "..."
        with transient_errors_as("publishing a notification"):
            answer = self._sns.publish(TopicArn=self._topic, Subject=line, Message=message)
        return str(answer.get("MessageId", ""))
