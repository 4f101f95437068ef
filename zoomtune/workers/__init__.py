"""zoomtune workers: Celery worker daemons that run trials."""
