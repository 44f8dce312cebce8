"""Online co-training (deep mutual learning): peer students train at once and teach each
other through live endpoints that serve each peer's newest weights.

- `config.py`: the `online` section (`OnlineConfig`: peers, who learns from whom, refresh and
  staleness bounds) and its rule `check_online`;
- `phases.py`: per seed a round in which every peer trains with its peers, then with
  `run.baseline` every peer alone on labels; each peer has its own Ray Train run
  (`orchestration.training.train_peers`); the run regime `REGIME`;
- `worker.py`: the hook `CoTraining`, which publishes the peer's weights through the run
  control and keeps it within `max_staleness` steps of what its endpoint serves;
- `board.py`: the orchestrator's side (`PeerBoard`: publications, served keys, rounds);
- `results.py`: each peer trained with its peers ("mutual") against the same peer alone on
  labels, mean and spread over seeds, and how stale the live teachers' weights were.
The replica side, which loads the published weights, is `teachers.deployment.LiveWeights`.
"""

from orchestration.regimes.co_training.board import Key, PeerBoard, PeerTimeoutError
from orchestration.regimes.co_training.config import OnlineConfig, PeerConfig, check_online
from orchestration.regimes.co_training.phases import REGIME, online_jobs
from orchestration.regimes.co_training.results import online_gain_lines, online_rows
from orchestration.regimes.co_training.worker import CoTraining, OnlineRole, TargetLag, WeightPublisher

__all__ = ["REGIME", "CoTraining", "Key", "OnlineConfig", "OnlineRole", "PeerBoard", "PeerConfig", "PeerTimeoutError",
           "TargetLag", "WeightPublisher", "check_online", "online_gain_lines", "online_jobs", "online_rows"]
