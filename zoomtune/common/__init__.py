"""zoomtune: the parts shared by the coordinator and the workers."""
