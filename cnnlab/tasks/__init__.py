"""What the engine can train: one module per task, each registering itself in
:data:`cnnlab.engine.task.TASKS` (the interface is :mod:`cnnlab.engine.task`)."""

from cnnlab.tasks import classification, detection, embedding  # noqa: F401
