"""localcloud: the EC2 API (moto, in-process) whose instances are real hosts (podman containers).

See docs/localcloud.md. Entry point: ``python -m localcloud up|down|status|env``.
"""
