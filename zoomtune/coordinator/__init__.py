"""zoomtune coordinator: samples trials, dispatches them, narrows the search."""
