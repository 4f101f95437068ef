"""zoomtune: distributed coarse-to-fine random search for hyperparameters.

The one import name zoomtune installs: `zoomtune.common` (shared), `zoomtune.coordinator`
(the `coordinator` command) and `zoomtune.workers` (the `worker` command)."""
