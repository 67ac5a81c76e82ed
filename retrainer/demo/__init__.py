"""What serves the demo, the tests and the benchmarks, not production: the demo itself (`loop`), the
launcher of Celery worker and beat child processes (`processes`) and the synthetic CTR data
(`synthetic`). It sits at the top of the layers, beside the CLI."""
