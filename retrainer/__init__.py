"""retrainer: keeps production ML models accurate on its own."""

__version__ = "0.1.0"
